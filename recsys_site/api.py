"""Job endpoints: start a job (staff token), list and read runs. Views are thin: validate, call, serialise."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from .api_common import responses, unstorable
from .jobs import JobRefused, get_job, job_start, run_get, run_list


class RunSerializer(serializers.Serializer):
    """A run document as the dashboard reads it (the log and traceback only in the detail view)."""

    id = serializers.CharField(source="_id")
    job = serializers.CharField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    message = serializers.CharField(allow_blank=True, required=False)
    params = serializers.DictField()
    trigger = serializers.CharField(required=False)
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(required=False)
    finished_at = serializers.DateTimeField(required=False)
    duration_s = serializers.FloatField(required=False)
    model_version = serializers.CharField(required=False)
    device = serializers.CharField(required=False)
    worker = serializers.CharField(required=False)
    steps = serializers.ListField(child=serializers.DictField())
    metrics = serializers.DictField(required=False)
    error = serializers.CharField(required=False)


class RunDetailSerializer(RunSerializer):
    log = serializers.ListField(child=serializers.CharField())
    traceback = serializers.CharField(required=False)


class JobStartApi(APIView):
    """POST /api/v1/jobs/{name} ``{"params": {...}}`` → 202 with the queued run; 409 if it is already running."""

    permission_classes = [IsAdminUser]

    class JobStartInputSerializer(serializers.Serializer):
        params = serializers.DictField(required=False, default=dict)

        def validate_params(self, value):
            if why := unstorable(value):
                raise serializers.ValidationError(why)
            return value

    @extend_schema(request=JobStartInputSerializer, operation_id="job_start",
                   responses=responses(RunSerializer, 400, 401, 403, 404, 409, 415, status=202))
    def post(self, request, name: str):
        try:
            get_job(name)
        except KeyError as exc:
            return Response({"code": "unknown_job", "message": str(exc).strip("'\"")}, status=status.HTTP_404_NOT_FOUND)
        data = self.JobStartInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            run = job_start(name=name, params=data.validated_data["params"], trigger=f"api:{request.user.username}")
        except JobRefused as exc:
            return Response({"code": "already_running", "message": str(exc), "run_id": exc.run_id},
                            status=status.HTTP_409_CONFLICT)
        except ValueError as exc:
            return Response({"code": "invalid", "message": str(exc), "fields": {"params": [str(exc)]}},
                            status=status.HTTP_400_BAD_REQUEST)
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class JobRunListApi(APIView):
    """GET /api/v1/jobs/runs?job=NAME&limit=N — newest first."""

    permission_classes = [IsAdminUser]

    class RunFilterSerializer(serializers.Serializer):
        job = serializers.CharField(required=False)
        limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=500)

    class RunListSerializer(serializers.Serializer):
        results = RunSerializer(many=True)

    @extend_schema(parameters=[RunFilterSerializer], responses=responses(RunListSerializer, 400, 401, 403),
                   operation_id="job_runs_list")
    def get(self, request):
        query = self.RunFilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        runs = run_list(job=query.validated_data.get("job"), limit=query.validated_data["limit"])
        return Response({"results": RunSerializer(runs, many=True).data})


class JobRunDetailApi(APIView):
    """GET /api/v1/jobs/runs/{id} — one run with its log lines and traceback."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses=responses(RunDetailSerializer, 401, 403, 404), operation_id="job_run_get")
    def get(self, request, run_id: str):
        run = run_get(run_id=run_id)
        if run is None:
            return Response({"code": "not_found", "message": f"no job run {run_id}"}, status=status.HTTP_404_NOT_FOUND)
        return Response(RunDetailSerializer(run).data)
