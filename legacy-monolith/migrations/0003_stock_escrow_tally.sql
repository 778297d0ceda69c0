-- What each side's escrow share did during a write canary: sales taken from it and orders it
-- refused because the other side held the rest. The phase controller gates a write canary on
-- the refusal rate (`escrow-refusals`); `strangler escrow split` starts both at 0.
ALTER TABLE stock_escrow
  ADD COLUMN taken BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN refused BIGINT NOT NULL DEFAULT 0;
