"""Donations service: seller donation rules (versioned) and the donation ledger."""
