"""The job queue (rows in the db), the worker, the child entry point, executors and the db-backed RunContext."""
