"""A small file system: absolute paths to text contents; directories exist implicitly."""

from __future__ import annotations

import random
from typing import Any

from envs.tool_calling.domain import Domain, ToolError, tool
from envs.tool_calling.scenario import Scenario, Turn, call, fact

PATH = {"type": "string", "description": "Absolute path, e.g. /notes/todo.txt"}


def check_path(path: str) -> str:
    parts = path.split("/")
    if not path.startswith("/") or path.endswith("/") or "" in parts[1:] or ".." in parts or "." in parts:
        raise ToolError(f"invalid path {path!r}: use an absolute path like /notes/todo.txt")
    return path


class FileSystem(Domain):
    name = "files"
    STATE_SCHEMA = {
        "type": "object",
        "properties": {"files": {"type": "object", "additionalProperties": {"type": "string"}}},
        "required": ["files"],
        "additionalProperties": False,
    }

    @property
    def files(self) -> dict[str, str]:
        return self.state["files"]

    def _existing(self, path: str) -> str:
        if check_path(path) not in self.files:
            raise ToolError(f"no such file: {path}")
        return path

    @tool("List every file under a directory, recursively.", {"directory": {**PATH, "description": "e.g. /docs"}},
          ["directory"])
    def list_files(self, directory: str) -> dict[str, Any]:
        prefix = directory.rstrip("/") + "/"
        paths = sorted(p for p in self.files if p.startswith(prefix))
        if not paths and directory != "/":
            raise ToolError(f"no such directory: {directory}")
        return {"directory": directory, "files": paths}

    @tool("Read a text file.", {"path": PATH}, ["path"])
    def read_file(self, path: str) -> dict[str, Any]:
        return {"path": path, "content": self.files[self._existing(path)]}

    @tool("Create a file, or replace the contents of an existing one.",
          {"path": PATH, "content": {"type": "string"}}, ["path", "content"])
    def write_file(self, path: str, content: str) -> dict[str, Any]:
        created = check_path(path) not in self.files
        self.files[path] = content
        return {"path": path, "created": created, "size": len(content)}

    @tool("Append a line of text to the end of an existing file.", {"path": PATH, "line": {"type": "string"}},
          ["path", "line"])
    def append_line(self, path: str, line: str) -> dict[str, Any]:
        text = self.files[self._existing(path)]
        self.files[path] = text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"
        return {"path": path, "size": len(self.files[path])}

    @tool("Delete a file.", {"path": PATH}, ["path"])
    def delete_file(self, path: str) -> dict[str, Any]:
        del self.files[self._existing(path)]
        return {"deleted": path}

    @tool("Move or rename a file. Fails if the destination exists.",
          {"source": PATH, "destination": PATH}, ["source", "destination"])
    def move_file(self, source: str, destination: str) -> dict[str, Any]:
        self._existing(source)
        if check_path(destination) in self.files:
            raise ToolError(f"destination exists: {destination}")
        self.files[destination] = self.files.pop(source)
        return {"moved": source, "to": destination}

    @tool("Find the files whose contents contain a text (case-insensitive).",
          {"text": {"type": "string", "minLength": 1}}, ["text"])
    def search_files(self, text: str) -> dict[str, Any]:
        needle = text.lower()
        return {"text": text, "matches": sorted(p for p, c in self.files.items() if needle in c.lower())}


# -- scenarios ----------------------------------------------------------------------------------------------------

PEOPLE = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun", "Kira", "Leo", "Mina", "Nils"]
PROJECTS = ["atlas", "beacon", "cobalt", "delta", "ember", "falcon", "garnet", "harbor", "iris", "juniper", "kestrel",
            "lumen", "meridian", "nimbus", "onyx", "prism", "quill", "raven", "sierra", "tundra"]
PLACES = ["home", "office", "cabin", "studio", "parents", "lab"]
WORDS = ["otter", "maple", "comet", "river", "cedar", "pixel", "amber", "tiger", "lotus", "orbit", "quartz", "willow"]
TASKS = ["buy milk", "renew passport", "water the plants", "book dentist", "fix the bike", "pay rent", "call mom",
         "return library books", "clean the gutters", "send the invoice", "order printer ink", "back up the laptop",
         "plan the trip", "update the resume"]


def random_files(rng: random.Random) -> tuple[dict[str, str], dict[str, Any]]:
    """A file tree with a few facts planted in it (returned alongside, for the scenarios to ask about)."""
    info: dict[str, Any] = {
        "password": f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randint(10, 99)}",
        "network": f"{rng.choice(WORDS).title()}Net-{rng.randint(1, 9)}",
        "project": rng.choice(PROJECTS),
        "owner": rng.choice(PEOPLE),
        "year": rng.randint(2015, 2024),
        "revenue": rng.randint(100, 999) * 1000,
        "todo": rng.sample(TASKS, 3),
        "keyword": f"{rng.choice(WORDS)}{rng.randint(100, 999)}",
    }
    folder, stem = rng.choice(["notes", "home", "misc"]), rng.choice(["wifi", "network", "router"])
    info["wifi_path"] = f"/{folder}/{stem}{rng.choice(['', *(f'-{p}' for p in PLACES)])}.txt"
    files = {
        info["wifi_path"]: f"network: {info['network']}\npassword: {info['password']}\n",
        "/notes/todo.txt": "".join(f"- {t}\n" for t in info["todo"]),
        f"/projects/{info['project']}/README.md": f"# {info['project']}\nOwner: {info['owner']}\nStatus: active\n",
        f"/docs/report-{info['year']}.txt": f"Annual report {info['year']}\nRevenue: {info['revenue']} USD\n",
        f"/docs/report-{info['year'] - 1}.txt": f"Annual report {info['year'] - 1}\nRevenue: "
                                                  f"{info['revenue'] - rng.randint(1, 90) * 1000} USD\n",
        f"/notes/idea-{rng.randint(1, 99)}.txt": f"Idea code {info['keyword']}: {rng.choice(WORDS)} "
                                                   f"{rng.choice(WORDS)}\n",
    }
    for _ in range(rng.randint(0, 3)):
        files[f"/photos/{rng.choice(WORDS)}-{rng.randint(100, 999)}.jpg"] = "<binary>"
    info["idea_path"] = next(p for p in files if p.startswith("/notes/idea-"))
    return files, info


def read_password(rng: random.Random) -> Scenario:
    files, info = random_files(rng)
    path = info["wifi_path"]
    ask = rng.choice([f"What is the wifi password? It's in {path}.", f"Can you read {path} and tell me the password?",
                      f"I need the wifi password, it's written in {path}."])
    return Scenario("single_call", {"files": {"files": files}}, [Turn(
        ask, [[call("read_file", path=path)]],
        f"The wifi password is {info['password']} (network {info['network']}).", [fact(info["password"])])])


def write_note(rng: random.Random) -> Scenario:
    files, _ = random_files(rng)
    name, text = f"{rng.choice(WORDS)}-{rng.randint(1, 999)}", f"Remember the {rng.choice(WORDS)} {rng.choice(TASKS)}"
    path = f"/notes/{name}.txt"
    return Scenario("single_call", {"files": {"files": files}}, [Turn(
        f"Create the file {path} with exactly this content: {text}",
        [[call("write_file", path=path, content=text)]], f"Done: I created {path}.", [fact(path)])])


def find_and_archive(rng: random.Random) -> Scenario:
    files, info = random_files(rng)
    src = info["idea_path"]
    dst = "/archive/" + src.rsplit("/", 1)[1]
    return Scenario("multi_call", {"files": {"files": files}}, [Turn(
        f"One of my files mentions the code {info['keyword']}. Find it and move it into /archive (same file name). "
        "Tell me where it was.",
        [[call("search_files", text=info["keyword"])], [call("move_file", source=src, destination=dst)]],
        f"It was {src}; I moved it to {dst}.", [fact(src)])])


def cleanup(rng: random.Random) -> Scenario:
    files, info = random_files(rng)
    old = rng.choice([f"/docs/report-{info['year'] - 1}.txt", info["idea_path"],
                      *(p for p in files if p.startswith("/photos/"))])
    extra = rng.choice([t for t in TASKS if t not in info["todo"]])
    return Scenario("multi_call", {"files": {"files": files}}, [Turn(
        f"Delete {old} and add '- {extra}' as a new line at the end of /notes/todo.txt.",
        [[call("delete_file", path=old), call("append_line", path="/notes/todo.txt", line=f"- {extra}")]],
        f"I deleted {old} and added '- {extra}' to your to-do list.", [])])


def project_owner_conversation(rng: random.Random) -> Scenario:
    files, info = random_files(rng)
    readme = f"/projects/{info['project']}/README.md"
    report = f"/docs/report-{info['year']}.txt"
    turns = [
        Turn(f"I have a few questions about {info['project']} and the {info['year']} report. First, who owns the "
             f"{info['project']} project? Its README is at {readme}.",
             [[call("read_file", path=readme)]], f"{info['owner']} owns {info['project']}.", [fact(info["owner"])]),
        Turn("And what revenue does that report in /docs give?",
             [[call("read_file", path=report)]], f"The {info['year']} report gives a revenue of {info['revenue']} USD.",
             [fact(str(info["revenue"]))]),
        Turn(f"Please save that number to /notes/revenue-{info['year']}.txt, just the number.",
             [[call("write_file", path=f"/notes/revenue-{info['year']}.txt", content=str(info["revenue"]))]],
             f"Saved {info['revenue']} to /notes/revenue-{info['year']}.txt.", []),
    ]
    return Scenario("multi_turn", {"files": {"files": files}}, turns)


def impossible_files(rng: random.Random) -> Scenario:
    files, info = random_files(rng)
    choice = rng.randrange(3)
    if choice == 0:  # the tool exists in the domain but this task does not offer it
        path = f"/docs/report-{info['year'] - 1}.txt"
        return Scenario("impossible", {"files": {"files": files}}, [Turn(
            f"Delete {path}, please.", [], "I can't delete files: none of my tools can remove a file.",
            possible=False)], withheld_tools=["delete_file"])
    if choice == 1:  # nothing in the domain can do it
        return Scenario("impossible", {"files": {"files": files}}, [Turn(
            f"Email /projects/{info['project']}/README.md to {info['owner']}.", [],
            "I can't send email: my tools only read and change files.", possible=False)])
    return Scenario("impossible", {"files": {"files": files}}, [Turn(  # a detail the user never gives
        f"Move {info['wifi_path']} to another folder.", [],
        f"Which folder should I move {info['wifi_path']} to?", possible=False)])


SCENARIOS = [read_password, write_note, find_and_archive, cleanup, project_owner_conversation, impossible_files]
