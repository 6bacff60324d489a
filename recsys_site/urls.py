from django.contrib import admin
from django.urls import include, path

from . import api, views

api_v1 = [
    path("jobs/runs", api.JobRunListApi.as_view(), name="job-run-list"),
    path("jobs/runs/<str:run_id>", api.JobRunDetailApi.as_view(), name="job-run-detail"),
    path("jobs/<str:name>", api.JobStartApi.as_view(), name="job-start"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("api/v1/", include(api_v1)),
]
