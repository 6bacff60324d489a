"""Catalogue reads: one playlist, playlist search with pages, one track."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from .mpd import URI_RE
from .selectors import playlist_get, playlist_search, track_get


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
    @extend_schema(responses=PlaylistDetailSerializer, operation_id="playlist_get")
    def get(self, request, pid: int):
        doc = playlist_get(pid=pid)
        if doc is None:
            raise NotFound(f"unknown playlist {pid}")
        return Response(PlaylistDetailSerializer(doc).data)


class PlaylistListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        search = serializers.CharField(required=False, allow_blank=True, max_length=200)
        page = serializers.IntegerField(required=False, default=1, min_value=1, max_value=100_000)
        page_size = serializers.IntegerField(required=False, default=20, min_value=1, max_value=100)

    class PlaylistPageSerializer(serializers.Serializer):
        count = serializers.IntegerField()
        page = serializers.IntegerField()
        results = PlaylistSummarySerializer(many=True)

    @extend_schema(parameters=[FilterSerializer], responses=PlaylistPageSerializer, operation_id="playlists_search")
    def get(self, request):
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        v = query.validated_data
        docs, total = playlist_search(text=v.get("search", ""), page=v["page"], page_size=v["page_size"])
        return Response(self.PlaylistPageSerializer({"count": total, "page": v["page"], "results": docs}).data)


class TrackDetailApi(APIView):
    class TrackSerializer(serializers.Serializer):
        uri = serializers.CharField(source="_id")
        name = serializers.CharField()
        artist_name = serializers.CharField()
        album_name = serializers.CharField(required=False)
        duration_ms = serializers.IntegerField(required=False)
        num_playlists = serializers.IntegerField()

    @extend_schema(responses=TrackSerializer)
    def get(self, request, uri: str):
        if not URI_RE["track"].match(uri):
            raise ValidationError({"uri": [f"{uri!r} is not a spotify:track: URI"]})
        doc = track_get(uri=uri)
        if doc is None:
            raise NotFound(f"unknown track {uri}")
        return Response(self.TrackSerializer(doc).data)
