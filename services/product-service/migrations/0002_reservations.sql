-- Stock held for an order saga: the caller's id is the idempotency key; items as reserved.
CREATE TABLE reservations (
  id VARCHAR(64) NOT NULL,
  status ENUM('reserved','released','committed','returned') NOT NULL,
  items JSON NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
