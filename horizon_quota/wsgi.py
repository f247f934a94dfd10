"""WSGI entry point (gunicorn horizon_quota.wsgi)."""

from django.core.wsgi import get_wsgi_application

from horizon_quota.runtime import prepare

prepare()
application = get_wsgi_application()
