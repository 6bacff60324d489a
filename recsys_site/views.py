from django.http import JsonResponse

from .health import health


def healthz(request):
    """JSON status of MongoDB, the broker and the scheduler; 503 when MongoDB or the broker is down."""
    report = health()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
