"""Catalogue reads (one playlist, playlist search with pages, one track) and writes: users, their playlists, events."""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from ranker.picks.precompute import picks_after_feedback
from recsys_site.api_common import known_user, responses, unstorable
from recsys_site.auth import (
    EVENTS_WRITE,
    USERS_WRITE,
    app_creating_users,
    check_acts_for,
    credential_create,
    credential_label,
)
from recsys_site.errors import error

from .feedback.rules import EVENT_KINDS
from .feedback.services import ID_MAX_CHARS, MS_PLAYED_MAX, EventError, event_record_many
from .mpd import URI_RE
from .selectors import PageTooDeep, playlist_get, playlist_search_page, track_get
from .services import UserExists, user_create, user_playlist_create


class PlaylistSummarySerializer(serializers.Serializer):
    pid = serializers.IntegerField(source="_id")
    name = serializers.CharField()
    owner = serializers.CharField(required=False)
    num_followers = serializers.IntegerField(required=False)
    num_tracks = serializers.IntegerField(required=False)


class PlaylistTrackSerializer(serializers.Serializer):
    uri = serializers.CharField()
    name = serializers.CharField()
    artist_name = serializers.CharField()
    album_name = serializers.CharField(required=False)
    duration_ms = serializers.IntegerField(required=False)


class PlaylistDetailSerializer(PlaylistSummarySerializer):
    tracks = PlaylistTrackSerializer(many=True)


class PlaylistDetailApi(APIView):
    @extend_schema(responses=responses(PlaylistDetailSerializer, 404), operation_id="playlist_get")
    def get(self, request, pid: int):
        doc = playlist_get(pid=pid) if pid < 2**63 else None  # MongoDB's ints are 64-bit: no such playlist
        if doc is None:
            raise NotFound(f"unknown playlist {pid}")
        return Response(PlaylistDetailSerializer(doc).data)


class PlaylistListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        search = serializers.CharField(required=False, allow_blank=True, max_length=200)
        page = serializers.IntegerField(required=False, default=1, min_value=1, max_value=100_000)
        page_size = serializers.IntegerField(required=False, default=20, min_value=1, max_value=100)

    class PlaylistPageSerializer(serializers.Serializer):
        count = serializers.IntegerField(help_text="matching playlists; see count_is")
        count_is = serializers.ChoiceField(
            ["exact", "at_least", "estimated"],
            help_text="exact; at_least: counted up to PLAYLIST_SEARCH_MAX_ROWS and there may be more; estimated: "
                      "the catalogue's size from metadata (no search)")
        page = serializers.IntegerField()
        results = PlaylistSummarySerializer(many=True)

    @extend_schema(parameters=[FilterSerializer], responses=responses(PlaylistPageSerializer, 400),
                   operation_id="playlists_search")
    def get(self, request):
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        v = query.validated_data
        try:
            found = playlist_search_page(text=v.get("search", ""), page=v["page"], page_size=v["page_size"])
        except PageTooDeep as exc:
            raise ValidationError({"page": [str(exc)]}) from None
        return Response(self.PlaylistPageSerializer({**found, "page": v["page"]}).data)


class TrackDetailApi(APIView):
    class TrackSerializer(serializers.Serializer):
        uri = serializers.CharField(source="_id")
        name = serializers.CharField()
        artist_name = serializers.CharField()
        album_name = serializers.CharField(required=False)
        duration_ms = serializers.IntegerField(required=False)
        num_playlists = serializers.IntegerField()

    @extend_schema(responses=responses(TrackSerializer, 400, 404))
    def get(self, request, uri: str):
        if not URI_RE["track"].match(uri):
            raise ValidationError({"uri": [f"{uri!r} is not a spotify:track: URI"]})
        doc = track_get(uri=uri)
        if doc is None:
            raise NotFound(f"unknown track {uri}")
        return Response(self.TrackSerializer(doc).data)


# -- writes (token auth) ------------------------------------------------------------------------------------------

class UserCreateApi(APIView):
    """POST /api/v1/users ``{"name": "alice"}`` → 201 ``{"id": "api:alice", "token": "…"}``; 409 if taken.

    An app token with ``users:write`` (or staff): the user belongs to that app, and the answer carries the user's
    own token (shown this once), which acts for that user only."""

    permission_classes = [IsAuthenticated]

    class UserCreateInputSerializer(serializers.Serializer):
        name = serializers.RegexField(r"^[A-Za-z0-9_.\-]{1,64}$", help_text="1-64 letters, digits, _ . -")

    class UserCreatedSerializer(serializers.Serializer):
        id = serializers.CharField()
        token = serializers.CharField(help_text="the user's own token: it acts for this user only")

    @extend_schema(request=UserCreateInputSerializer,
                   responses=responses(UserCreatedSerializer, 400, 401, 403, 409, 415, status=201))
    def post(self, request):
        app = app_creating_users(request)
        data = self.UserCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            user = user_create(name=data.validated_data["name"], app=app)
        except UserExists as exc:
            return error("user_exists", str(exc), status.HTTP_409_CONFLICT)
        _, token = credential_create(kind="user", user=user, app=app or "")
        return Response({"id": user, "token": token}, status=status.HTTP_201_CREATED)


class UserPlaylistCreateApi(APIView):
    """POST /api/v1/users/{id}/playlists ``{"name": "...", "tracks": [uris]}`` → 201 with the playlist."""

    permission_classes = [IsAuthenticated]

    class PlaylistCreateInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        tracks = serializers.ListField(child=serializers.RegexField(URI_RE["track"].pattern), min_length=1,
                                       max_length=1000)

    @extend_schema(request=PlaylistCreateInputSerializer,
                   responses=responses(PlaylistDetailSerializer, 400, 401, 403, 404, 415, status=201))
    def post(self, request, user: str):
        check_acts_for(request, [user], USERS_WRITE)
        data = self.PlaylistCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            playlist = user_playlist_create(user=known_user(user), name=data.validated_data["name"],
                                            tracks=data.validated_data["tracks"])
        except ValueError as exc:
            raise ValidationError({"tracks": [str(exc)]}) from exc
        picks_after_feedback(users=[playlist["owner"]], refresh=False)
        return Response(PlaylistDetailSerializer(playlist).data, status=status.HTTP_201_CREATED)


class EventSerializer(serializers.Serializer):
    """The schema of one event; ``ingestion.feedback.services._event_doc`` validates it (the same bounds)."""

    user = serializers.CharField()
    kind = serializers.ChoiceField(choices=EVENT_KINDS)
    track = serializers.CharField(required=False)
    playlist = serializers.IntegerField(required=False, help_text="follow/unfollow: the playlist (required); "
                                        "play/skip/like: the playlist the track was played from (optional)")
    ms_played = serializers.IntegerField(required=False, min_value=0, max_value=MS_PLAYED_MAX,
                                         help_text="milliseconds, at most 24 h")
    rec_id = serializers.CharField(required=False, min_length=1, max_length=ID_MAX_CHARS,
                                   help_text="the rec_id of the picks this event answers")
    event_id = serializers.CharField(required=False, min_length=1, max_length=ID_MAX_CHARS,
                                     help_text="a client-generated id, unique per user: a retried event with the "
                                               "same one is stored once")
    ts = serializers.CharField(required=False, help_text="when it happened, ISO-8601 with a time zone (default: when "
                                                         "it is stored); at most CLIENT_TS_MAX_AGE_DAYS old, at most "
                                                         "CLIENT_TS_SKEW_SECONDS ahead")


EVENT_FIELDS = tuple(EventSerializer().fields)
MAX_EVENTS = 1000
# The body is one event or a list of 1 to MAX_EVENTS of them.
EVENTS_REQUEST = PolymorphicProxySerializer(
    component_name="EventOrBatch", resource_type_field_name=None, many=False,
    serializers=[EventSerializer, EventSerializer(many=True, min_length=1, max_length=MAX_EVENTS)])


def schema_batch_limits(result, generator, request, public):
    """drf-spectacular drops a list serializer's length bounds; state the batch's 1..MAX_EVENTS in the schema."""
    batch = result.get("components", {}).get("schemas", {}).get("EventOrBatch", {}).get("oneOf", [])
    for variant in batch:
        if variant.get("type") == "array":
            variant.update(minItems=1, maxItems=MAX_EVENTS)
    return result


class EventCreateApi(APIView):
    """POST /api/v1/events: one event or a list; all stored or none, with each bad item's field errors."""

    permission_classes = [IsAuthenticated]

    class EventsStoredSerializer(serializers.Serializer):
        stored = serializers.IntegerField(help_text="events stored by this request")
        duplicates = serializers.IntegerField(help_text="events not stored again: their event_id was already stored")

    @extend_schema(request=EVENTS_REQUEST,
                   responses=responses(EventsStoredSerializer, 400, 401, 403, 415, status=201))
    def post(self, request):
        events = request.data if isinstance(request.data, list) else [request.data]
        if not events or len(events) > MAX_EVENTS:
            raise ValidationError({"events": [f"send 1 to {MAX_EVENTS} events"]})
        unfit = {str(i): bad for i, e in enumerate(events) if isinstance(e, dict)
                 and (bad := {f: why for f in EVENT_FIELDS if f in e and (why := unstorable(e[f]))})}
        if unfit:
            return error("invalid", "no event was stored: some are invalid", status.HTTP_400_BAD_REQUEST, fields=unfit)
        check_acts_for(request, [e["user"] for e in events if isinstance(e, dict) and isinstance(e.get("user"), str)],
                       EVENTS_WRITE)
        try:
            written = event_record_many(events=events, check_users=True, credential=credential_label(request))
        except EventError as exc:
            return error("invalid", "no event was stored: some are invalid", status.HTTP_400_BAD_REQUEST,
                         fields={str(i): e for i, e in exc.errors.items()})
        picks_after_feedback(users=[e["user"] for e in written.docs], events=written.docs)
        return Response({"stored": written.stored, "duplicates": written.duplicates}, status=status.HTTP_201_CREATED)
