-- user-service's own schema: the monolith's `users` table, column for column (cdc-sync mirrors
-- it both ways), the outbox of domain events, and the Ed25519 token keys.
CREATE TABLE users (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  email VARCHAR(254) NOT NULL,
  password_hash VARCHAR(255) NOT NULL,
  name VARCHAR(100) NOT NULL,
  phone VARCHAR(32) NULL,
  address VARCHAR(500) NULL,
  role ENUM('customer','admin') NOT NULL DEFAULT 'customer',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE jwt_keys (
  kid VARCHAR(64) NOT NULL,
  seed VARBINARY(32) NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  activates_at DATETIME(3) NOT NULL,
  retires_at DATETIME(3) NULL,
  PRIMARY KEY (kid)
) ENGINE=InnoDB;
