"""The charities service: registry of charities and projects, live donation totals."""
