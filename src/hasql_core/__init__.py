"""hasql-core: connections to the right member of a highly available PostgreSQL cluster."""
