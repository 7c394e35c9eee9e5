"""Database instances: SQLite engines whose pages live in the Tidemark fleet, served
over the PostgreSQL wire protocol."""
