"""Root URLs: the admin, /healthz, the OpenAPI schema and docs, and /api/v1/ composed from each package's api.py."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from ingestion import api as ingestion_api
from pairing import api as pairing_api
from ranker import api as ranker_api

from . import api, views
from .metrics import metrics_view

api_v1 = [
    path("users", ingestion_api.UserCreateApi.as_view(), name="user-create"),
    path("users/<str:user>/playlists", ingestion_api.UserPlaylistCreateApi.as_view(), name="user-playlist-create"),
    path("events", ingestion_api.EventCreateApi.as_view(), name="events"),
    path("users/<str:user>/playlists/recommended", ranker_api.UserPlaylistPicksApi.as_view(), name="user-playlists"),
    path("users/<str:user>/tracks/recommended", ranker_api.UserTrackPicksApi.as_view(), name="user-tracks"),
    path("users/<str:user>/buddies", pairing_api.UserBuddiesApi.as_view(), name="user-buddies"),
    path("recommendations/continuation", ranker_api.ContinuationApi.as_view(), name="continuation"),
    path("search", ranker_api.SearchApi.as_view(), name="search"),
    path("playlists", ingestion_api.PlaylistListApi.as_view(), name="playlist-list"),
    path("playlists/<int:pid>", ingestion_api.PlaylistDetailApi.as_view(), name="playlist-detail"),
    path("tracks/<str:uri>", ingestion_api.TrackDetailApi.as_view(), name="track-detail"),
    path("models", ranker_api.ModelListApi.as_view(), name="model-list"),
    path("experiments/<str:name>/results", ranker_api.ExperimentResultsApi.as_view(), name="experiment-results"),
    path("jobs/runs", api.JobRunListApi.as_view(), name="job-run-list"),
    path("jobs/runs/<str:run_id>", api.JobRunDetailApi.as_view(), name="job-run-detail"),
    path("jobs/<str:name>", api.JobStartApi.as_view(), name="job-start"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

handler404 = "recsys_site.views.not_found"
