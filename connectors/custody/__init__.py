"""Custody of shared brand logins in OpenBao/Vault (provider type ``openbao``)."""
