"""Both object stores (SeaweedFS over S3, a local folder): a read pinned to the listed
version, and what the lake ingest does when an object is replaced after the listing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from datalake_pipelines.L1_raw_layer.ingest import fetch_listed
from strata.objectstore import ObjectChanged, ObjectStore, open_store
from strata.settings import Settings


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, services: Settings, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return open_store(f"s3://strata-source/objectstore-{uuid.uuid4().hex[:8]}", services)
    return open_store(str(tmp_path / "store"), services)


def test_a_read_pinned_to_a_version_refuses_another(store: ObjectStore) -> None:
    first = store.put("2019-06-01-10-00-0-events.json", b"one\n")
    assert store.get(first.key, etag=first.etag) == b"one\n"
    listed = next(iter(store.list()))
    assert listed.etag == first.etag == store.stat(first.key).etag
    second = store.put(first.key, b"two, longer\n")
    assert second.etag != first.etag
    with pytest.raises(ObjectChanged, match="no longer ETag"):
        store.get(first.key, etag=first.etag)
    assert store.get(first.key) == b"two, longer\n"
    now = store.stat(first.key)
    assert (now.etag, now.size) == (second.etag, len(b"two, longer\n"))


def test_an_object_replaced_after_the_listing_is_read_as_the_new_version(
    store: ObjectStore,
) -> None:
    store.put("2019-06-01-10-00-0-events.json", b"one\n")
    (listed,) = store.list()
    replaced = store.put(listed.key, b"two, longer\n")
    info, data = fetch_listed(store, listed)
    # the bytes read and the identity the ledger records belong to the same version
    assert data == b"two, longer\n"
    assert (info.etag, info.size) == (replaced.etag, len(data))
