"""Track picks, playlist picks, playlist continuation and model versions. Views validate, call, serialise."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from ingestion.feedback.services import client_ts_parse
from ingestion.mpd import URI_RE
from ranker.experiments.assign import experiment_results, served_context
from ranker.picks.search import TYPES, SearchError, search
from ranker.picks.serve import MAX_K, serve_continuation, serve_playlist_picks, serve_track_picks
from ranker.training.selectors import live_version, model_list
from recsys_site.api_common import KSerializer, responses
from recsys_site.auth import check_reads, check_staff, credential_label

K_PARAM = OpenApiParameter("k", int, description="how many picks")
TS_PARAM = OpenApiParameter("ts", str, description="when the list is shown, if not now (ISO-8601 with a time zone; "
                            "a replaying client, the listening simulator): the served log dates it so; at most "
                            "CLIENT_TS_MAX_AGE_DAYS old, at most CLIENT_TS_SKEW_SECONDS ahead")


def _served_as(request, exposure: bool) -> dict:
    """How the served log records this read's list: the caller's credential, and the client's ``?ts=`` as a UTC
    datetime (None when absent, or for a read that is not logged); a bad ``ts`` is a 400 naming it."""
    if not exposure:
        return {}
    raw = request.query_params.get("ts")
    at, why = client_ts_parse(raw, retention_days=settings.SERVED_RETENTION_DAYS) if raw is not None else (None, None)
    if why:
        raise ValidationError({"ts": [why]})
    return {"at": at, "credential": credential_label(request)}


class PickListSerializer(serializers.Serializer):
    rec_id = serializers.CharField(help_text="send it back with feedback events on these picks")
    model_version = serializers.CharField(allow_null=True)
    variant = serializers.CharField()
    experiment = serializers.CharField(allow_null=True, required=False)
    source = serializers.CharField(
        help_text="precomputed | reranked (second stage) | model | model+title (a title and a few seeds) | title | "
                  "popularity | most_followed")
    cached = serializers.BooleanField(required=False, help_text="served from the picks cache")


class TrackPickSerializer(serializers.Serializer):
    uri = serializers.CharField()
    score = serializers.FloatField()


class TrackPicksSerializer(PickListSerializer):
    tracks = TrackPickSerializer(many=True)


class PlaylistPickSerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    name = serializers.CharField(allow_null=True)
    owner = serializers.CharField(allow_null=True)
    score = serializers.FloatField()
    why = serializers.DictField(help_text="buddy, buddy_similarity, shared_artists, new_share, …")


class PlaylistPicksSerializer(PickListSerializer):
    playlists = PlaylistPickSerializer(many=True)


# Output serializers built once and reused (``to_representation`` keeps no state): building one per request deep-
# copies every declared field, which was a sixth of a cached pick's time (docs/BENCHMARKS.md).
TRACK_PICKS_OUT = TrackPicksSerializer()
PLAYLIST_PICKS_OUT = PlaylistPicksSerializer()


class UserTrackPicksApi(APIView):
    @extend_schema(parameters=[K_PARAM, TS_PARAM], responses=responses(TrackPicksSerializer, 400, 401, 403, 404))
    def get(self, request, user: str):
        exposure = check_reads(request, user)
        query = KSerializer(data=request.query_params, default=50, maximum=MAX_K)
        query.is_valid(raise_exception=True)
        with served_context(**_served_as(request, exposure)):
            picks = serve_track_picks(user=user, k=query.validated_data["k"], record=exposure)  # UnknownUser: 404
        return Response(TRACK_PICKS_OUT.to_representation(picks))


class UserPlaylistPicksApi(APIView):
    @extend_schema(parameters=[K_PARAM, TS_PARAM],
                   responses=responses(PlaylistPicksSerializer, 400, 401, 403, 404))
    def get(self, request, user: str):
        exposure = check_reads(request, user)
        query = KSerializer(data=request.query_params, default=10, maximum=100)
        query.is_valid(raise_exception=True)
        with served_context(**_served_as(request, exposure)):
            picks = serve_playlist_picks(user=user, k=query.validated_data["k"], record=exposure)  # UnknownUser: 404
        return Response(PLAYLIST_PICKS_OUT.to_representation(picks))


class ContinuationApi(APIView):
    """The RecSys 2018 task: tracks that continue a playlist given its name and/or first tracks."""

    class ContinuationInputSerializer(serializers.Serializer):
        name = serializers.CharField(required=False, allow_blank=True, max_length=500)
        seed_tracks = serializers.ListField(child=serializers.CharField(), required=False, default=list,
                                            max_length=1000)
        k = serializers.IntegerField(required=False, default=MAX_K, min_value=1, max_value=MAX_K)

        def validate_seed_tracks(self, value):
            bad = [i for i, uri in enumerate(value) if not URI_RE["track"].match(uri)]
            if bad:
                raise serializers.ValidationError(f"items {bad[:10]} are not spotify:track: URIs")
            return value

        def validate(self, data):
            if not data.get("seed_tracks") and not (data.get("name") or "").strip():
                raise serializers.ValidationError("give a name, seed_tracks, or both")
            return data

    class ContinuationSerializer(TrackPicksSerializer):
        unknown_seeds = serializers.ListField(child=serializers.CharField())

    @extend_schema(request=ContinuationInputSerializer, responses=responses(ContinuationSerializer, 400, 415))
    def post(self, request):
        data = self.ContinuationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        picks = serve_continuation(name=v.get("name"), seed_tracks=v["seed_tracks"], k=v["k"])
        # Built in ContinuationSerializer's shape already (the schema above; tests/ranker hold it to that): passing
        # 500 picks through it field by field cost 2.6 ms a request, a tenth of the whole request.
        return Response(picks)


class SearchApi(APIView):
    """Mood search: playlists or tracks for free text, each with why it matched (the live version's text model).

    Who may call: anyone, like the other catalogue reads (``GET playlists``), within the default throttles."""

    class SearchResultSerializer(serializers.Serializer):
        pid = serializers.IntegerField(required=False, help_text="type=playlists")
        uri = serializers.CharField(required=False, help_text="type=tracks")
        name = serializers.CharField(allow_null=True)
        owner = serializers.CharField(required=False, allow_null=True, help_text="type=playlists")
        artist = serializers.CharField(required=False, allow_null=True, help_text="type=tracks")
        score = serializers.FloatField()
        why = serializers.DictField(help_text="similarity; matched (the query's words and n-grams it shares); for a "
                                              "track, playlists: the nearest-named playlists that hold it")

    class SearchSerializer(serializers.Serializer):
        query = serializers.CharField()
        type = serializers.ChoiceField(TYPES)
        model_version = serializers.CharField(allow_null=True)
        source = serializers.CharField(help_text="text (the text model); none: no live model with a text model")
        results = serializers.ListField(child=serializers.DictField())

    class SearchQuerySerializer(serializers.Serializer):
        """``q``, ``type`` and ``k``, bounded by the settings read when a request comes (tests may change them)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.fields["q"] = serializers.CharField(
                max_length=settings.SEARCH_MAX_QUERY_CHARS,
                help_text="free text, e.g. 'rainy day sad songs' (at most SEARCH_MAX_QUERY_CHARS characters)")
            self.fields["type"] = serializers.ChoiceField(TYPES, required=False, default="tracks",
                                                          help_text="what to return")
            self.fields["k"] = serializers.IntegerField(required=False, default=10, min_value=1,
                                                        max_value=settings.SEARCH_MAX_K,
                                                        help_text="how many results (at most SEARCH_MAX_K)")

    @extend_schema(parameters=[SearchQuerySerializer], responses=responses(SearchSerializer, 400),
                   operation_id="search")
    def get(self, request):
        query = self.SearchQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        v = query.validated_data
        try:
            found = search(q=v["q"], kind=v["type"], k=v["k"])
        except SearchError as exc:
            raise ValidationError({exc.param: [str(exc)]}) from exc
        return Response(found)


class ModelListApi(APIView):
    class ModelSerializer(serializers.Serializer):
        version = serializers.CharField(source="_id")
        status = serializers.CharField()
        live = serializers.BooleanField()
        created_at = serializers.DateTimeField()
        promoted_at = serializers.DateTimeField(required=False)
        recommender = serializers.CharField(required=False)
        params = serializers.DictField(required=False)
        metrics = serializers.DictField(required=False)
        data = serializers.DictField(required=False)
        device = serializers.CharField(required=False, allow_null=True)
        reason = serializers.CharField(required=False)

    class ModelListSerializer(serializers.Serializer):
        live = serializers.CharField(allow_null=True)
        results = serializers.ListField(child=serializers.DictField())

    @extend_schema(responses=responses(ModelListSerializer))
    def get(self, request):
        live = live_version()
        models = [{**m, "live": m["_id"] == live} for m in model_list(limit=50)]
        return Response({"live": live, "results": self.ModelSerializer(models, many=True).data})


class ExperimentResultsApi(APIView):
    """Per variant: users, picks served, click-through, follow-through, skip rate, listening minutes, with 95 %
    intervals, and each variant's difference to the baseline in follow-through and minutes, with its 95 % interval
    (staff)."""

    class ExperimentResultsSerializer(serializers.Serializer):
        experiment = serializers.CharField()
        baseline = serializers.CharField(allow_null=True, help_text="the variant the *_diff figures compare against")
        variants = serializers.DictField(child=serializers.DictField())

    @extend_schema(responses=responses(ExperimentResultsSerializer, 401, 403, 404))
    def get(self, request, name: str):
        check_staff(request)
        try:
            results = experiment_results(name=name)
        except KeyError as exc:
            raise NotFound(f"unknown experiment {name!r}") from exc
        return Response(self.ExperimentResultsSerializer(results).data)
