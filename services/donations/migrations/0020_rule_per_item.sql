-- Charity items: a rule may donate per unit sold of listed items ({item_id: amount_minor},
-- at most 1000 items), versioned with the rest of the rule. The accrual keeps the part of
-- its amount that came from items (after the cap at the order total): a partial refund
-- leaves that part alone, only a full refund reverses it.
ALTER TABLE donation_rule
    ADD COLUMN per_item jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(per_item) = 'object');
ALTER TABLE ledger_entry ADD COLUMN item_minor bigint CHECK (item_minor >= 0);
