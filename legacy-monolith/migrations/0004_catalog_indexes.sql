-- The indexes a real shop adds once its catalog grows: the listing filters on `active` (and
-- `category`) and pages by id.
ALTER TABLE products
  ADD KEY idx_products_active (active, id),
  ADD KEY idx_products_active_category (active, category, id);
