"""What the tests share: clients, fakes, stack helpers, markets. Imported by tests and
conftest files alike (a conftest only declares fixtures)."""
