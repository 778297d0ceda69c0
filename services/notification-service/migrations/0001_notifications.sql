-- notification-service's own schema. `notifications` is the monolith's table, column for column
-- (its `/api/notifications` reads it); `inbox` receives the services' outbox events (cdc-sync
-- writes them, keyed by event id, so a replayed event is the same row).
CREATE TABLE notifications (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id BIGINT UNSIGNED NOT NULL,
  channel ENUM('email','sms','push') NOT NULL,
  template VARCHAR(64) NOT NULL,
  payload JSON NOT NULL,
  status ENUM('pending','sent','failed') NOT NULL DEFAULT 'pending',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  sent_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  KEY idx_notifications_user (user_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE inbox (
  id CHAR(36) NOT NULL,
  aggregatetype VARCHAR(64) NOT NULL,
  aggregateid VARCHAR(64) NOT NULL,
  type VARCHAR(64) NOT NULL,
  payload JSON NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  KEY idx_inbox_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One delivery per event and channel: the idempotency of sending.
CREATE TABLE deliveries (
  event_id CHAR(36) NOT NULL,
  channel ENUM('email','sms','push','none') NOT NULL,
  notification_id BIGINT UNSIGNED NULL,
  attempts INT NOT NULL DEFAULT 0,
  next_attempt_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  last_error TEXT NULL,
  PRIMARY KEY (event_id, channel),
  KEY idx_deliveries_due (next_attempt_at)
) ENGINE=InnoDB;

CREATE TABLE contacts (
  user_id BIGINT UNSIGNED NOT NULL,
  email VARCHAR(254) NULL,
  name VARCHAR(100) NULL,
  phone VARCHAR(32) NULL,
  push_token VARCHAR(255) NULL,
  email_enabled TINYINT(1) NOT NULL DEFAULT 1,
  sms_enabled TINYINT(1) NOT NULL DEFAULT 0,
  push_enabled TINYINT(1) NOT NULL DEFAULT 0,
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE dead_letters (
  event_id CHAR(36) NOT NULL,
  channel VARCHAR(8) NOT NULL,
  attempts INT NOT NULL,
  error TEXT NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (event_id, channel)
) ENGINE=InnoDB;
