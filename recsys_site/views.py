from django.http import JsonResponse
from django.views.defaults import page_not_found

from .health import health


def healthz(request):
    """JSON status of MongoDB, the broker and the scheduler; 503 when MongoDB or the broker is down. The errors'
    text (hosts, ports, driver messages) is for staff; a probe sees which part is down, not why."""
    report = health()
    if not (request.user.is_authenticated and request.user.is_staff):
        for part in report.values():
            if isinstance(part, dict):
                part.pop("error", None)
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)


def not_found(request, exception=None):
    """404 for a URL no route matches: JSON under /api/ (like every other API error), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "not_found", "message": f"no endpoint at {request.path}"}, status=404)

    return page_not_found(request, exception)
