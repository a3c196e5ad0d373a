"""The embedded Valkey and PostgreSQL servers of `rowcast up`."""
