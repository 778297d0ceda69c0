-- The catalog listing filters on `active` (and `category`) and pages by id: indexes that serve
-- both the page and its count without reading the rows.
ALTER TABLE products
  ADD KEY idx_products_active (active, id),
  ADD KEY idx_products_active_category (active, category, id);
