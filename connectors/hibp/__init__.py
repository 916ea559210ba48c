"""Have I Been Pwned: the breached-domain poller."""
