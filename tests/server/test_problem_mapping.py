"""How a service error becomes a problem: its status from its class, its field by the
API's name (gpupool.fields), and back to the CLI's line on the client. No server."""

from __future__ import annotations

import json

import pytest

from gpupool import fields
from gpupool.cli.remote import _error
from gpupool.model import Conflict, GpupoolError, IllegalTransition, NotFound, PermissionDenied
from gpupool.server.problems import gpupool_error, status_of


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Conflict("a pool named 'x' already exists", location="name"), 409),
        (IllegalTransition("a cancelled job cannot become cancelled", location="state"), 409),
        (Conflict("anything at all"), 409),  # the class decides, not the words
        (GpupoolError("a pool named 'x' already exists"), 422),  # words alone do not
        (GpupoolError("submit key 'k' was already used"), 422),
        (NotFound("no org named 'x'"), 404),
        (PermissionDenied("bob may not"), 403),
        (GpupoolError("cannot connect", location="--db"), 503),
    ],
)
def test_the_status_comes_from_the_error_class(error, status):
    assert status_of(error) == status


def test_names_stored_twice_are_conflicts():
    from gpupool import limits

    with pytest.raises(Conflict):
        limits.check_unique("Lab", ["lab"], "organisation", "name")


def _problem(error, method="POST", path="/jobs") -> dict:
    response = gpupool_error(error, lambda loc: fields.api_field(loc, method, path))
    return json.loads(response.body)


@pytest.mark.parametrize(
    ("location", "method", "path", "field"),
    [
        ("--gpus", "POST", "/jobs", "gpus"),
        ("--gpu-type", "POST", "/jobs", "gpu_types"),  # the submit body's list
        ("--gpu-type", "POST", "/pools", "gpu_type"),
        ("--memory", "POST", "/gpu-types", "memory_gb"),
        ("--price", "POST", "/pools", "price_per_gpu_hour"),
        ("--as", "GET", "/jobs", "Authorization"),
        ("--state", "GET", "/jobs", "state"),
        ("USER", "POST", "/tokens", "user"),
        ("job id", "GET", "/jobs/{job_id}", "job_id"),
        ("jobs.csv:7 gpus", "POST", "/jobs/batch", "jobs.csv:7 gpus"),  # a file's: as is
        ("state", "POST", "/jobs/{job_id}/cancel", "state"),
    ],
)
def test_the_field_is_the_apis_and_the_client_prints_the_cli_line(location, method, path, field):
    error = GpupoolError("must be something else", location=location)
    body = _problem(error, method, path)
    assert body["field"] == field
    assert body["detail"] == str(error)  # the CLI's own line
    back = _error(422, body, None, method, path)
    assert (str(back), back.location) == (str(error), location)


def test_every_cli_location_maps_to_an_api_name_and_back():
    for location, field in fields.API_FIELDS.items():
        assert not field.startswith("-"), location
        detail = f"{location}: bad"
        assert fields.cli_location(detail, field) == location


def test_a_detail_naming_another_input_is_not_split():
    body = {"detail": "--org: no such org", "field": "gpus", "status": 422}
    back = _error(422, body, None, "POST", "/jobs")
    assert (str(back), back.location) == ("--org: no such org", None)
