"""Microsoft Entra ID (Graph): the provider, the sign-in log poller and the login normaliser."""
