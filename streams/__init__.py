"""accessguard: access-revocation and security monitor for brand social-media accounts."""

__version__ = "0.1.0"

# The connectors declare the vendor facts the core may not spell (streams/model/kinds.py):
# imported here, before any other module of the package, so that every entry point, test and
# library use has them before a login record is validated or a rule table is built.
import connectors.base.kinds  # noqa: F401
