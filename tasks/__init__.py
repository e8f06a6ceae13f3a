"""Prefect tasks: each wraps one domain call and declares its retries and cache policy."""
