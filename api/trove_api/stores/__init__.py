"""Durable state: the metadata database (tables, migrations, advisory locks) and the snapshot stores."""
