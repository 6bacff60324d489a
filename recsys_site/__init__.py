"""The Django project. Importing it loads the Celery app, so that ``shared_task``s sent from any Django process
(web, management commands) use Buddies' broker and not Celery's default."""

from celery_app import app as celery_app

__all__ = ["celery_app"]
