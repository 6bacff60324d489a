"""A user's taste buddies."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from recsys_site.api_common import KSerializer, known_user, responses
from recsys_site.auth import check_reads

from .selectors import buddies_for_user, buddies_state


class BuddySerializer(serializers.Serializer):
    user = serializers.CharField()
    similarity = serializers.FloatField()
    shared_tracks = serializers.IntegerField()
    shared_artists_count = serializers.IntegerField()
    shared_artists = serializers.ListField(child=serializers.CharField())


class UserBuddiesApi(APIView):
    class BuddiesSerializer(serializers.Serializer):
        user = serializers.CharField()
        model_version = serializers.CharField(allow_null=True)
        buddies = BuddySerializer(many=True)

    @extend_schema(parameters=[OpenApiParameter("k", int)], responses=responses(BuddiesSerializer, 400, 401, 403, 404))
    def get(self, request, user: str):
        check_reads(request, user)
        query = KSerializer(data=request.query_params, default=10, maximum=50)
        query.is_valid(raise_exception=True)
        buddies = buddies_for_user(user=known_user(user), k=query.validated_data["k"]) or []
        state = buddies_state() or {}
        return Response(self.BuddiesSerializer({"user": user, "model_version": state.get("model_version"),
                                               "buddies": buddies}).data)
