-- This side's share of each product's stock while both sides sell (a write canary): a sale takes
-- from it as well as from `inventory`, so the two sides together never sell more than there is.
-- No row for a product: no escrow, the stock guard alone decides. Each side keeps its own rows;
-- they are never replicated (`strangler escrow` splits and rebalances them).
CREATE TABLE stock_escrow (
  product_id BIGINT UNSIGNED NOT NULL,
  units INT NOT NULL,
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (product_id),
  CONSTRAINT chk_stock_escrow_units CHECK (units >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
