"""WSGI entry point (gunicorn horizon_quota.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "horizon_quota.settings")

application = get_wsgi_application()
