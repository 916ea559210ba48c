"""Detection rules as data: fields, model, state, engine, loading, tests. Pure: no I/O."""
