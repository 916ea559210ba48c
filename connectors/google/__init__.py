"""Google Workspace: the provider (Admin SDK) and the login normaliser."""
