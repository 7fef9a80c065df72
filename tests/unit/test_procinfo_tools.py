from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aidns.resolver.procinfo.tools import (
    KnownTools,
    Tool,
    ToolKind,
    default_tools,
    load_tools,
    parse_tool,
    shipped_tools_path,
)
from aidns.resolver.query import ProcessInfo

# --- the tool catalogue -----------------------------------------------------------------------

# (name, exe, cmdline) -> tool, or None for programs that must stay untagged
TAGS = [
    ("ollama", "/usr/local/bin/ollama", "/usr/local/bin/ollama serve", "ollama"),
    ("ollama", "/usr/bin/ollama", "ollama runner --model /x", "ollama"),
    ("Ollama", "/Applications/Ollama.app/Contents/MacOS/Ollama", None, "ollama"),
    (
        "LM Studio Helper",
        "/Applications/LM Studio.app/Contents/Frameworks/LM Studio Helper.app/Contents/MacOS/"
        "LM Studio Helper",
        None,
        "lmstudio",
    ),
    ("lm-studio", "/tmp/.mount_LM-StuAbc123/lm-studio", None, "lmstudio"),
    ("lms", "/home/u/.lmstudio/bin/lms", "lms server start", "lmstudio"),
    ("Jan", "/Applications/Jan.app/Contents/MacOS/Jan", None, "jan"),
    ("chat", "/home/u/gpt4all/bin/chat", "/home/u/gpt4all/bin/chat", "gpt4all"),
    ("anythingllm-des", "/tmp/.mount_Anythi1/anythingllm-desktop", None, "anythingllm"),
    (
        "llama-server",
        "/opt/llama.cpp/build/bin/llama-server",
        "llama-server -m m.gguf",
        "llama.cpp",
    ),
    ("python3", "/usr/bin/python3.11", "python3 -m llama_cpp.server --model m.gguf", "llama.cpp"),
    ("local-ai", "/usr/local/bin/local-ai", "local-ai run", "localai"),
    (
        "cursor",
        "/tmp/.mount_cursorXyz/cursor",
        "/tmp/.mount_cursorXyz/cursor --type=utility",
        "cursor",
    ),
    ("Cursor Helper (", "/Applications/Cursor.app/Contents/Frameworks/x", None, "cursor"),
    ("windsurf", "/usr/share/windsurf/windsurf", None, "windsurf"),
    (
        "language_server",
        "/usr/share/windsurf/resources/app/extensions/windsurf/bin/language_server_linux_x64",
        None,
        "windsurf",
    ),
    (
        "code",
        "/usr/share/code/code",
        "/usr/share/code/code --type=utility --utility-sub-type=node",
        "vscode",
    ),
    (
        "Code Helper (Pl",
        "/Applications/Visual Studio Code.app/Contents/Frameworks/x",
        None,
        "vscode",
    ),
    (
        "node",
        "/usr/bin/node",
        "node /usr/lib/node_modules/@continuedev/cli/dist/index.js",
        "continue",
    ),
    ("continue-binary", "/home/u/.continue/index/continue-binary", None, "continue"),
    ("node", "/usr/bin/node", "node server.js", None),
    ("node", "/usr/bin/node", "node /usr/local/bin/claude", "claude-code"),
    ("python3", "/usr/bin/python3.11", "/usr/bin/python3 /home/u/.venv/bin/vllm serve m", "vllm"),
    (
        "pt_main_thread",
        "/usr/bin/python3.11",
        "python -m vllm.entrypoints.openai.api_server",
        "vllm",
    ),
    ("vllm", "/usr/bin/python3.11", "/usr/bin/python3 /usr/local/bin/vllm serve m", "vllm"),
    (
        "python3",
        "/usr/bin/python3.11",
        "/usr/bin/python3 -m ipykernel_launcher -f /root/.local/share/jupyter/runtime/k.json",
        "jupyter",
    ),
    (
        "jupyter-lab",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/jupyter-lab",
        "jupyter",
    ),
    (
        "streamlit",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/streamlit run app.py",
        "streamlit",
    ),
    ("python3", "/usr/bin/python3.11", "python3 -m streamlit run app.py", "streamlit"),
    ("gradio", "/usr/bin/python3.11", "/usr/bin/python3 /usr/local/bin/gradio app.py", "gradio"),
    (
        "open-webui",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/open-webui serve",
        "open-webui",
    ),
    ("python3", "/usr/bin/python3.11", "python3 -m uvicorn open_webui.main:app", "open-webui"),
    (
        "chroma",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/chroma run --path db",
        "chromadb",
    ),
    (
        "python3.11",
        "/home/u/text-generation-webui/installer_files/env/bin/python3.11",
        "python server.py --listen",
        "text-generation-webui",
    ),
    ("claude", "/home/u/.local/bin/claude", "claude", "claude-code"),
    (
        "node",
        "/usr/bin/node",
        "node /usr/lib/node_modules/@google/gemini-cli/dist/index.js",
        "gemini-cli",
    ),
    ("codex", "/usr/local/bin/codex", "codex exec fix", "codex"),
    ("cline", "/usr/local/bin/cline", "cline task", "cline"),
    ("crewai", "/usr/bin/python3.11", "/usr/bin/python3 /home/u/.local/bin/crewai run", "crewai"),
    (
        "raylet",
        "/home/u/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet",
        None,
        "ray",
    ),
    (
        "python3",
        "/usr/bin/python3.11",
        "python3 /home/u/venv/lib/python3.11/site-packages/ray/dashboard/dashboard.py",
        "ray",
    ),
    ("mlflow", "/usr/bin/python3.11", "/usr/bin/python3 /usr/local/bin/mlflow server", "mlflow"),
    ("dvc", "/usr/bin/python3.11", "/usr/bin/python3 /usr/local/bin/dvc push", "dvc"),
    ("qdrant", "/qdrant/qdrant", "./qdrant", "qdrant"),
    ("weaviate", "/bin/weaviate", "/bin/weaviate --host 0.0.0.0", "weaviate"),
    ("yolo", "/usr/bin/python3.11", "/usr/bin/python3 /usr/local/bin/yolo predict", "ultralytics"),
    ("ComfyUI", "/Applications/ComfyUI.app/Contents/MacOS/ComfyUI", None, "comfyui-desktop"),
    ("chatbox", "/tmp/.mount_Chatbo1/chatbox", None, "chatbox"),
    ("python3", "/usr/bin/python3.11", "python3 /home/u/Fooocus/entry_with_update.py", "fooocus"),
    ("pycharm", "/opt/pycharm/bin/pycharm", None, "jetbrains"),
    ("java", "/usr/bin/java", "java -cp lib/* com.intellij.idea.Main", "jetbrains"),
    ("openhands", "/usr/local/bin/openhands", "openhands", "openhands"),
    (
        "interpreter",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/interpreter",
        "open-interpreter",
    ),
    ("wandb-core", "/home/u/venv/bin/wandb-core", None, "wandb"),
    ("python3", "/usr/bin/python3.11", "python3 app.py", None),
    ("bash", "/home/jan/bin/tool", "/home/jan/bin/tool", None),  # a user called jan
    ("curl", "/usr/bin/curl", "curl https://example.com/vllm", None),
]


@pytest.fixture(scope="module")
def catalogue() -> KnownTools:
    return default_tools()


@pytest.mark.parametrize(("name", "exe", "cmdline", "tool"), TAGS)
def test_tools_are_recognised(
    catalogue: KnownTools,
    name: str,
    exe: str,
    cmdline: str | None,
    tool: str | None,
) -> None:
    info = ProcessInfo(4242, name, exe=exe, cmdline=cmdline, uid=1000, user="u")
    tagged = catalogue.tag(info)
    assert tagged.tool == tool
    assert not tagged.relay and tagged.note is None
    assert (tagged.pid, tagged.name, tagged.exe, tagged.uid, tagged.user) == (
        4242,
        name,
        exe,
        1000,
        "u",
    )


@pytest.mark.parametrize(
    ("name", "exe", "relay"),
    [
        ("systemd-resolve", "/usr/lib/systemd/systemd-resolved", "systemd-resolved"),
        ("systemd-resolve", None, "systemd-resolved"),  # comm keeps 15 of its 16 characters
        ("dnsmasq", "/usr/sbin/dnsmasq", "dnsmasq"),
        ("mDNSResponder", "/usr/sbin/mDNSResponder", "mdnsresponder"),
        ("nscd", "/usr/sbin/nscd", "nscd"),
        ("unbound", "/usr/sbin/unbound", "unbound"),
    ],
)
def test_system_resolvers_are_relays_with_a_note(
    catalogue: KnownTools,
    name: str,
    exe: str | None,
    relay: str,
) -> None:
    tagged = catalogue.tag(ProcessInfo(101, name, exe=exe, uid=101))
    assert (tagged.tool, tagged.relay) == (relay, True)
    assert tagged.note is not None and "cannot be seen" in tagged.note


def test_uid_only_information_is_left_alone(catalogue: KnownTools) -> None:
    info = ProcessInfo(None, None, uid=1000, note="process not found within 2 ms")
    assert catalogue.tag(info) is info


def test_tools_yaml_schema() -> None:
    """Every entry is well formed, names are unique, relays explain themselves."""
    document = yaml.safe_load(shipped_tools_path().read_text(encoding="utf-8"))
    assert set(document) == {"tools"}
    names = [entry["name"] for entry in document["tools"]]
    assert len(names) == len(set(names))
    for entry in document["tools"]:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", entry["name"])
        keys = {"name", "description", "homepage", "kind", "note", "match", "optout"}
        assert set(entry) <= keys
        assert entry["description"].strip()
        assert entry.get("kind", "ai") in ("ai", "relay", "embedded")
        if entry.get("kind") == "relay":
            assert entry["note"].strip()
        if entry.get("kind") != "embedded":
            assert entry["match"], entry["name"]
        for item in entry.get("optout", []):
            assert set(item) <= {"env", "setting", "alternative"}, entry["name"]
        for rule in entry.get("match", []):
            assert rule and set(rule) <= {"process", "exe", "cmdline"}, entry["name"]
            for patterns in rule.values():
                assert isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)
            for pattern in rule.get("cmdline", []):
                re.compile(pattern)
        tool = parse_tool(entry)
        assert isinstance(tool, Tool)
    catalogue = default_tools()
    assert catalogue.problems == ()
    assert len(catalogue) == len(names)
    wanted_tools = {
        "ollama", "lmstudio", "jan", "gpt4all", "anythingllm", "cursor", "windsurf", "vscode",
        "continue", "vllm", "gradio", "streamlit", "jupyter", "open-webui", "chromadb",
        "text-generation-webui", "llama.cpp", "localai",
        # issue 15
        "claude-code", "gemini-cli", "codex", "cline", "roo-code", "crewai", "ray", "mlflow",
        "dvc", "unstructured", "qdrant", "weaviate", "ultralytics", "comfyui-desktop",
        "chatbox", "fooocus", "jetbrains", "kilo-code", "goose", "openhands",
        "open-interpreter", "mem0", "haystack", "wandb",
    }  # fmt: skip
    assert wanted_tools <= set(names)
    relays = {t.name for t in catalogue.tools if t.kind is ToolKind.RELAY}
    assert {"systemd-resolved", "dnsmasq", "mdnsresponder", "nscd", "unbound"} <= relays


def test_relays_come_before_tools(catalogue: KnownTools) -> None:
    kinds = [tool.kind for tool in catalogue.tools]
    assert kinds == sorted(kinds, key=lambda kind: kind is not ToolKind.RELAY)


def test_own_catalogue_overrides_and_extends(tmp_path: Path) -> None:
    own = tmp_path / "tools.yaml"
    own.write_text(
        "tools:\n"
        "  - name: ollama\n"
        "    description: only my build\n"
        "    match: [{exe: ['/opt/mine/ollama']}]\n"
        "  - name: my-agent\n"
        "    description: an in-house agent\n"
        "    match: [{process: [python3], cmdline: ['agent\\.py']}]\n"
    )
    catalogue = load_tools([shipped_tools_path(), own])
    assert catalogue.problems == ()
    assert catalogue.tools[0].name == "my-agent"
    ollama = catalogue.get("ollama")
    assert ollama is not None and ollama.description == "only my build"
    assert catalogue.tag(ProcessInfo(1, "ollama", exe="/usr/bin/ollama")).tool is None
    assert catalogue.tag(ProcessInfo(1, "ollama", exe="/opt/mine/ollama")).tool == "ollama"
    assert catalogue.tag(ProcessInfo(1, "python3", cmdline="python3 agent.py")).tool == "my-agent"


def test_bad_entries_are_skipped_and_reported_with_their_line(tmp_path: Path) -> None:
    own = tmp_path / "tools.yaml"
    own.write_text(
        "tools:\n"
        "  - name: good\n"
        "    description: fine\n"
        "    match: [{process: [good]}]\n"
        "  - name: Bad Name\n"
        "    match: [{process: [x]}]\n"
        "  - name: no-rules\n"
        "    match: []\n"
        "  - name: bad-regex\n"
        "    match: [{cmdline: ['(']}]\n"
        "  - name: bad-key\n"
        "    match: [{path: ['/x']}]\n"
        "  - name: silent-relay\n"
        "    kind: relay\n"
        "    match: [{process: [r]}]\n"
        "  - name: good\n"
        "    match: [{process: [again]}]\n"
    )
    catalogue = load_tools([own])
    assert [tool.name for tool in catalogue.tools] == ["good"]
    lines = [int(problem.split(":")[1]) for problem in catalogue.problems]
    assert lines == [5, 7, 9, 11, 13, 16]
    assert all(problem.startswith(f"{own}:") for problem in catalogue.problems)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tools: [unclosed\n", "not valid YAML"),
        ("- just a list\n", "a mapping with a `tools:` list"),
    ],
)
def test_a_broken_catalogue_file_is_reported_not_raised(
    tmp_path: Path, text: str, problem: str
) -> None:
    own = tmp_path / "tools.yaml"
    own.write_text(text)
    catalogue = load_tools([shipped_tools_path(), own])
    assert len(catalogue) > 0 and len(catalogue.problems) == 1
    assert problem in catalogue.problems[0]


def test_a_missing_catalogue_file_is_fine(tmp_path: Path) -> None:
    assert load_tools([tmp_path / "tools.yaml"]).problems == ()


def test_embedded_tools_need_no_match_and_never_name_a_process() -> None:
    tool = parse_tool(
        {
            "name": "somelib",
            "kind": "embedded",
            "description": "A library.",
            "optout": [{"env": "SOMELIB_TELEMETRY=0"}, {"setting": "or a switch"}],
        }
    )
    assert tool.kind is ToolKind.EMBEDDED and tool.rules == ()
    assert [item.shell_line() for item in tool.optout] == [
        "export SOMELIB_TELEMETRY=0",
        "# or a switch",
    ]
    assert KnownTools([tool]).tag(ProcessInfo(1, "somelib", exe="/bin/somelib")).tool is None
    with pytest.raises(ValueError, match="match must be a non-empty list"):
        parse_tool({"name": "app", "description": "An app."})


@pytest.mark.parametrize(
    ("optout", "error"),
    [
        ("DISABLE=1", "optout must be a list"),
        ([{"env": "DISABLE"}], "is not NAME=value"),
        ([{"env": "1BAD=1"}], "is not NAME=value"),
        ([{"env": "A=1", "setting": "x"}], "either `env: NAME=value` or `setting: text`"),
        ([{"setting": "x", "because": "y"}], "unknown optout key"),
        ([{"env": "A=1", "alternative": "yes"}], "alternative must be true or false"),
        ([{"setting": "line\nbreak"}], "control characters"),
        ([{"setting": "x" * 501}], "1 to 500 characters"),
    ],
)
def test_bad_optouts_are_refused(optout: object, error: str) -> None:
    entry = {"name": "app", "description": "An app.", "match": [{"process": ["app"]}]}
    with pytest.raises(ValueError, match=error):
        parse_tool({**entry, "optout": optout})


def test_every_tool_the_issue_names_has_an_optout(catalogue: KnownTools) -> None:
    wanted = {
        "claude-code": "DISABLE_TELEMETRY",
        "huggingface-cli": "HF_HUB_DISABLE_TELEMETRY",
        "vllm": "VLLM_NO_USAGE_STATS",
        "ray": "RAY_USAGE_STATS_ENABLED",
        "crewai": "CREWAI_DISABLE_TELEMETRY",
        "goose": "GOOSE_TELEMETRY_OFF",
        "mlflow": "MLFLOW_DISABLE_TELEMETRY",
        "unstructured": "DO_NOT_TRACK",
    }
    for name, variable in wanted.items():
        tool = catalogue.get(name)
        assert tool is not None and variable in {o.variable for o in tool.optout}, name


def test_a_tool_catalogue_over_its_limit_is_skipped_and_named(tmp_path: Path) -> None:
    from aidns.resolver.procinfo.tools import TOOLS_MAX_BYTES, load_tools

    big = tmp_path / "tools.yaml"
    big.write_text("tools:\n" + "#" * TOOLS_MAX_BYTES)
    loaded = load_tools([big])
    assert len(loaded) == 0
    assert loaded.problems == (
        f"{big}: over {TOOLS_MAX_BYTES:,} bytes, the most a tool catalogue may hold; not read",
    )
