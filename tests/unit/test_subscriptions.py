"""`lists add`, `update` and `remove` against a real list server on 127.0.0.1."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aidns.resolver.config import Settings, load_settings
from aidns.resolver.errors import ConfigError, ListError
from aidns.resolver.rules.catalogue import read_state, set_list_enabled
from aidns.resolver.rules.inspection import check_name, list_infos
from aidns.resolver.rules.lists import ListAction
from aidns.resolver.rules.subscriptions import (
    FetchError,
    add_list,
    default_name,
    remove_list,
    update_lists,
)

from ..listserver import ListServer, serve_lists

HOSTS = "# ads\n0.0.0.0 ads.example\n0.0.0.0 track.example\n"


@pytest.fixture
def site() -> Iterator[ListServer]:
    with serve_lists() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text("")
    return load_settings(config_path=config, data_dir=tmp_path / "data", resolv_conf=())


def lists_dir(settings: Settings) -> Path:
    return settings.data_dir / "lists"


def sidecar(settings: Settings, name: str) -> dict[str, object]:
    meta = json.loads((lists_dir(settings) / f"{name}.source.json").read_text())
    assert isinstance(meta, dict)
    return meta


def leftovers(settings: Settings) -> list[str]:
    return sorted(p.name for p in lists_dir(settings).iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("https://raw.example/StevenBlack/hosts/master/hosts", "hosts"),
        ("https://lists.example/AdGuard_DNS.filter.txt", "adguard-dns-filter"),
        ("https://lists.example/", "lists-example"),
        ("/home/me/My Blocklist.hosts", "my-blocklist"),
    ],
)
def test_default_names(source: str, name: str) -> None:
    assert default_name(source) == name


def test_add_a_url_then_update_with_conditional_requests(
    settings: Settings, site: ListServer
) -> None:
    url = site.put("/ads.hosts", HOSTS)
    added = add_list(settings, url)
    assert (added.name, len(added.loaded), added.path.name) == ("ads", 2, "ads.txt")
    assert added.path.read_text() == HOSTS
    assert added.path.stat().st_mode & 0o777 == 0o644
    meta = sidecar(settings, "ads")
    assert meta["source"] == url and meta["etag"] == site.pages["/ads.hosts"].etag
    assert meta["last_modified"] and meta["entries"] == 2 and meta["action"] == "block"
    assert check_name(settings, "ads.example").verdict == "blocked"

    [unchanged] = update_lists(settings)
    assert (unchanged.status, unchanged.detail) == ("unchanged", "not modified (HTTP 304)")
    headers = site.requests[-1][1]
    assert headers["if-none-match"] == meta["etag"]
    assert headers["if-modified-since"] == meta["last_modified"]
    assert headers["user-agent"].startswith("aidns")

    site.put("/ads.hosts", HOSTS + "0.0.0.0 new.example\n", gzip=True)
    [updated] = update_lists(settings, ("ads",))
    assert (updated.status, updated.entries, updated.previous) == ("updated", 3, 2)
    assert "new.example" in added.path.read_text()
    assert sidecar(settings, "ads")["etag"] == site.pages["/ads.hosts"].etag
    assert check_name(settings, "new.example").verdict == "blocked"
    assert leftovers(settings) == []


def test_a_failed_fetch_or_parse_keeps_the_last_good_copy(
    settings: Settings, site: ListServer
) -> None:
    url = site.put("/ads.txt", HOSTS)
    add_list(settings, url)
    good = (lists_dir(settings) / "ads.txt").read_bytes()
    for body, status, why in (
        (HOSTS, 500, "HTTP 500"),
        ("<html><body>Rate limited</body></html>\n", 200, "no usable entries"),
        ("", 200, "no usable entries"),
    ):
        site.put("/ads.txt", body, status=status)
        [failed] = update_lists(settings)
        assert failed.status == "failed" and why in failed.detail
        assert "kept the copy in use" in failed.detail and failed.kept_from is not None
        assert (lists_dir(settings) / "ads.txt").read_bytes() == good
        assert why in str(sidecar(settings, "ads")["error"])
        assert check_name(settings, "track.example").verdict == "blocked"
        assert leftovers(settings) == []
    infos, _ = list_infos(settings)
    assert "no usable entries" in next(i for i in infos if i.name == "ads").last_error
    site.put("/ads.txt", HOSTS + "0.0.0.0 third.example\n")
    [recovered] = update_lists(settings)
    assert recovered.status == "updated" and sidecar(settings, "ads")["error"] == ""


def test_a_stalled_server_times_out(settings: Settings, site: ListServer) -> None:
    url = site.put("/slow.txt", HOSTS)
    add_list(settings, url)
    site.put("/slow.txt", HOSTS, stall_s=2.0)
    [failed] = update_lists(settings, timeout_s=0.3)
    assert failed.status == "failed" and "0.3 s" in failed.detail
    with pytest.raises(FetchError, match=r"0\.3 s"):
        add_list(settings, url, name="other", timeout_s=0.3)


def test_a_list_whose_copy_was_deleted_is_fetched_whole(
    settings: Settings, site: ListServer
) -> None:
    add_list(settings, site.put("/ads.txt", HOSTS))
    (lists_dir(settings) / "ads.txt").unlink()
    [result] = update_lists(settings)
    assert result.status == "updated"
    assert "if-none-match" not in site.requests[-1][1]


def test_add_refuses_what_would_not_work(settings: Settings, site: ListServer) -> None:
    with pytest.raises(ListError, match="no usable entries"):
        add_list(settings, site.put("/page.txt", "<html>\n</html>\n"))
    with pytest.raises(FetchError, match="HTTP 404"):
        add_list(settings, site.url("/missing.txt"))
    with pytest.raises(ConfigError, match="already a list called 'jan'") as shipped:
        add_list(settings, site.put("/jan.txt", HOSTS))
    assert "lists update" not in str(shipped.value)  # a shipped list can't be updated
    assert "`aidns lists enable` or `disable`" in str(shipped.value)
    with pytest.raises(ConfigError, match="http:// or https://"):
        add_list(settings, "ftp://example/list.txt")
    with pytest.raises(ConfigError, match="can't name a list"):
        add_list(settings, site.put("/x.txt", HOSTS), name="Bad Name")
    with pytest.raises(FetchError, match="cannot read"):
        add_list(settings, str(settings.data_dir / "nowhere.txt"))
    assert not lists_dir(settings).exists() or leftovers(settings) == []
    assert [i.name for i in list_infos(settings)[0] if i.origin != "shipped"] == []


def test_add_a_local_file_as_a_watch_list_and_update_it(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "clouds.txt"
    source.write_text("api.cloud.example\n")
    added = add_list(settings, str(source), action=ListAction.WATCH)
    assert added.name == "clouds" and sidecar(settings, "clouds")["source"] == str(source)
    assert check_name(settings, "x.api.cloud.example").verdict == "watched"
    [same] = update_lists(settings)
    assert (same.status, same.detail) == ("unchanged", "same content")
    source.write_text("api.cloud.example\nmore.cloud.example\n")
    [changed] = update_lists(settings)
    assert (changed.status, changed.entries) == ("updated", 2)
    assert check_name(settings, "more.cloud.example").verdict == "watched"
    source.unlink()
    [failed] = update_lists(settings)
    assert failed.status == "failed" and "cannot read" in failed.detail


def test_add_a_yaml_list_keeps_its_own_name_and_action(
    settings: Settings, site: ListServer
) -> None:
    text = (
        "name: team\naction: watch\ndomains:\n"
        "  - {domain: llm.corp.example, purpose: cloud-inference}\n"
    )
    url = site.put("/team-list.yaml", text)
    with pytest.raises(ConfigError, match="calls itself 'team'"):
        add_list(settings, url, name="other")
    with pytest.raises(ConfigError, match="carries its own action"):
        add_list(settings, url, action=ListAction.BLOCK)
    added = add_list(settings, url)
    assert (added.name, added.path.name) == ("team", "team.yaml")
    verdict = check_name(settings, "llm.corp.example")
    assert verdict.verdict == "watched" and verdict.entry is not None
    assert verdict.entry.purpose == "cloud-inference"


def test_update_names_unknown_lists(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="no added list named 'jan'"):
        update_lists(settings, ("jan",))
    assert update_lists(settings) == []


def test_remove(settings: Settings, site: ListServer) -> None:
    added = add_list(settings, site.put("/ads.txt", HOSTS))
    set_list_enabled(settings, "ads", False)
    assert remove_list(settings, "ads") == added.path
    assert os.listdir(lists_dir(settings)) == []
    assert read_state(settings.data_dir).disable == ()
    with pytest.raises(ConfigError, match="shipped list"):
        remove_list(settings, "jan")
    with pytest.raises(ConfigError, match="no list named 'ads'"):
        remove_list(settings, "ads")


def test_a_sidecar_without_a_source_fails_that_list_only(
    settings: Settings, site: ListServer
) -> None:
    add_list(settings, site.put("/ads.txt", HOSTS))
    add_list(settings, site.put("/more.txt", "0.0.0.0 more.example\n"))
    (lists_dir(settings) / "ads.source.json").write_text("{}")
    results = {r.name: r for r in update_lists(settings)}
    assert results["ads"].status == "failed" and "names no source" in results["ads"].detail
    assert results["more"].status == "unchanged"
    assert check_name(settings, "ads.example").verdict == "blocked"


def test_adding_a_name_twice_hints_at_an_update_that_works(
    settings: Settings, site: ListServer
) -> None:
    add_list(settings, site.put("/mine.txt", HOSTS), name="mine")
    with pytest.raises(ConfigError, match="already a list called 'mine'") as again:
        add_list(settings, site.put("/mine.txt", HOSTS), name="mine")
    assert "refresh it with `aidns lists update mine`" in str(again.value)
    [result] = update_lists(settings, ("mine",))
    assert result.status in ("updated", "unchanged")
