"""The running service: worker, engine, executor, HTTP server, observation, replay."""
