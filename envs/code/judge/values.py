"""Values across the judge/candidate boundary: a graph of plain data, encoded and decoded without recursion and
without ever running code from the other side.

A message is ``{"n": [node, ...], "v": [token, ...]}``. A token is a JSON scalar (None, bool, str, float, an int below
2**62) or a tagged list: ``["r", i]`` node i, ``["o", k]`` object k of the request this replies to, ``["i", hex]``
a big int, ``["b", hex]`` bytes, ``["c", re, im]``, ``["D", str]`` Decimal, ``["F", n, d]`` Fraction, ``["R", a, b,
c]`` range, ``["e"]`` Ellipsis, ``["h", n]`` a remote iterator. Containers are nodes (``{"k": kind, "x": items}``)
referenced by index, so sharing, cycles and any depth survive: nothing here recurses, and ``==`` in the judge hits
the recursion limit exactly where it would in one process.

Mutation: the worker answers a call with the result *and* the new contents of every mutable argument object (nodes
with ``"o": k``); decoding them updates the judge's own objects in place, so ``xs = [3, 1]; candidate(xs); assert xs
== [1, 3]`` works, and ``candidate(xs) is xs`` holds when the function returns its argument.

Iterators (generators, map, filter, a class with ``__next__``) stay in the worker: the judge gets a proxy whose
``next()`` asks the worker for one item at a time, so lazy and infinite ones behave as in one process. Anything else
(functions, instances of the candidate's own classes) raises ``Unsupported``, reported as such, never a crash.
"""

import collections
import sys

INLINE_INT = 1 << 62
MUTABLE = ("list", "dict", "set", "bytearray", "deque", "odict", "counter", "ddict")
IMMUTABLE = ("tuple", "frozenset", "ntuple", "keys", "values", "items", "iter")
FACTORIES = {"int": int, "float": float, "str": str, "list": list, "dict": dict, "set": set, "tuple": tuple,
             "frozenset": frozenset, "bool": bool, "bytes": bytes, "complex": complex}
_NAMEDTUPLES = {}


class Unsupported(Exception):
    """A value that cannot cross the boundary faithfully."""


def _kind(v):
    """The node kind for a container, or None. Subclasses of the built-in containers travel as their base."""
    t = type(v)
    if t is list or t is tuple or t is dict or t is set or t is frozenset or t is bytearray:
        return t.__name__
    if t is collections.deque:
        return "deque"
    if t is collections.OrderedDict:
        return "odict"
    if t is collections.Counter:
        return "counter"
    if t is collections.defaultdict:
        return "ddict"
    if isinstance(v, tuple):
        fields = getattr(t, "_fields", None)
        if isinstance(fields, tuple) and all(type(f) is str for f in fields) and len(fields) == tuple.__len__(v):
            return "ntuple"
        return "tuple"
    for base in (list, dict, set, frozenset, bytearray):
        if isinstance(v, base):
            return base.__name__
    name = t.__name__
    if name in ("dict_keys", "dict_values", "dict_items") and t.__module__ == "builtins":
        return name[5:]
    return None


def _int_token(v):
    v = int.__int__(v)
    return v if -INLINE_INT < v < INLINE_INT else ["i", format(v, "x")]


class Encoder:
    """Turns values into a message. ``originals`` maps id(object) -> index for objects of the request being answered
    (kept alive by the caller); ``remote`` turns an object without a built-in encoding into a token or None;
    ``materialize`` sends iterators by their items (the judge's own, trusted ones)."""

    def __init__(self, originals=None, mutable_originals=(), remote=None, materialize=False):
        self.nodes, self.objects, self.seen = [], [], {}
        self.originals, self.remote, self.materialize = originals or {}, remote, materialize
        self.work = []
        for obj in mutable_originals:  # their new contents go back, referenced or not
            self.token(obj)

    def dump(self, values):
        tokens = [self.token(v) for v in values]
        while self.work:
            self._fill(*self.work.pop())
        return {"n": self.nodes, "v": tokens}

    def token(self, v):
        t = type(v)
        if v is None or t is bool or t is str or t is float:
            return v
        if t is int:
            return v if -INLINE_INT < v < INLINE_INT else ["i", format(v, "x")]
        key = id(v)
        if key in self.seen:
            return self.seen[key]
        kind = _kind(v)
        if key in self.originals and kind not in MUTABLE:
            return ["o", self.originals[key]]
        token = self._atom(v) if kind is None else None
        if token is None and kind is None and self.remote is not None:
            token = self.remote(v)
        if token is None and kind is None:
            if not (self.materialize and hasattr(type(v), "__next__")):
                raise Unsupported(f"a value of type {type(v).__name__} cannot be passed between the tests and the "
                                  "candidate")
            kind = "iter"
        if token is not None:
            self.seen[key] = token
            return token
        if kind is not None:
            index = len(self.nodes)
            node = {"k": kind}
            if key in self.originals:
                node["o"] = self.originals[key]
            self.nodes.append(node)
            self.objects.append(v)
            self.seen[key] = token = ["r", index]
            self.work.append((node, v, kind))
            return token

    def _atom(self, v):
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return _int_token(v)
        if isinstance(v, float):
            return float.__float__(v)
        if isinstance(v, str):
            return str.__str__(v)
        if isinstance(v, bytes):
            return ["b", bytes.hex(v)]
        if isinstance(v, complex):
            return ["c", complex.real.__get__(v), complex.imag.__get__(v)]
        if isinstance(v, range):
            return ["R", _int_token(v.start), _int_token(v.stop), _int_token(v.step)]
        if v is Ellipsis:
            return ["e"]
        decimal, fractions = sys.modules.get("decimal"), sys.modules.get("fractions")
        if decimal is not None and isinstance(v, decimal.Decimal):
            return ["D", decimal.Decimal.__str__(v)]
        if fractions is not None and isinstance(v, fractions.Fraction):
            return ["F", _int_token(v.numerator), _int_token(v.denominator)]
        return None

    def _fill(self, node, v, kind):
        if kind == "bytearray":
            node["x"] = bytes(v).hex()
            return
        if kind in ("dict", "odict", "counter", "ddict", "items"):
            pairs = dict.items(v) if kind != "items" else v
            node["x"] = [self.token(x) for pair in pairs for x in pair]
        elif kind in ("list", "deque"):
            node["x"] = [self.token(x) for x in (list.__iter__(v) if kind == "list" else v)]
        elif kind in ("tuple", "ntuple"):
            node["x"] = [self.token(x) for x in tuple.__iter__(v)]
        elif kind in ("set", "frozenset"):
            node["x"] = [self.token(x) for x in (set.__iter__(v) if kind == "set" else frozenset.__iter__(v))]
        else:  # keys, values, iter
            node["x"] = [self.token(x) for x in v]
        if kind == "deque":
            node["m"] = v.maxlen
        elif kind == "ntuple":
            node["f"] = [type(v).__name__, list(type(v)._fields)]
        elif kind == "ddict":
            factory = v.default_factory
            node["f"] = next((name for name, f in FACTORIES.items() if f is factory), None)
            if factory is not None and node["f"] is None:
                raise Unsupported("a defaultdict whose default_factory is not a built-in type cannot be passed")


def dump(values, originals=None, mutable_originals=(), remote=None, materialize=False):
    """(message, objects): ``objects`` are the message's container objects by node index (keep them alive while a
    reply to this message can refer to them)."""
    encoder = Encoder(originals, mutable_originals, remote, materialize)
    return encoder.dump(values), encoder.objects


# ---- decoding (untrusted input: plain values only, every shape checked) ------------------------------------------

def _atom_token(token, originals, remote):
    tag = token[0] if token else None
    if tag == "i" and len(token) == 2 and type(token[1]) is str:
        return int(token[1], 16)
    if tag == "b" and len(token) == 2 and type(token[1]) is str:
        return bytes.fromhex(token[1])
    if tag == "c" and len(token) == 3 and all(type(x) in (int, float) for x in token[1:]):
        return complex(token[1], token[2])
    if tag == "R" and len(token) == 4:
        return range(*(_int(x) for x in token[1:]))
    if tag == "e" and len(token) == 1:
        return Ellipsis
    if tag == "D" and len(token) == 2 and type(token[1]) is str and len(token[1]) < 1 << 20:
        import decimal
        return decimal.Decimal(token[1])
    if tag == "F" and len(token) == 3:
        import fractions
        return fractions.Fraction(_int(token[1]), _int(token[2]))
    if tag == "o" and len(token) == 2 and type(token[1]) is int and originals is not None \
            and 0 <= token[1] < len(originals):
        return originals[token[1]]
    if tag == "h" and len(token) == 2 and type(token[1]) is int and remote is not None:
        return remote(token[1])
    raise ValueError(f"malformed value token {str(token)[:80]}")


def _int(token):
    value = token if type(token) is int else (int(token[1], 16) if type(token) is list and len(token) == 2
                                             and token[0] == "i" and type(token[1]) is str else None)
    if value is None:
        raise ValueError("malformed integer")
    return value


def load(message, originals=None, remote=None):
    """(values, objects) of a message. ``originals``: the objects of our request (by node index), updated in place
    by nodes that carry ``"o"``; ``remote(n)``: the object for remote handle n."""
    if type(message) is not dict or type(message.get("n")) is not list or type(message.get("v")) is not list:
        raise ValueError("malformed message")
    nodes = message["n"]
    objs = [None] * len(nodes)
    for i, node in enumerate(nodes):
        if type(node) is not dict or node.get("k") not in MUTABLE + IMMUTABLE:
            raise ValueError("malformed node")
        if node["k"] in MUTABLE:
            objs[i] = _placeholder(node, originals)

    def resolve(token):
        if token is None or type(token) in (bool, int, float, str):
            return token
        if type(token) is not list:
            raise ValueError("malformed value token")
        if len(token) == 2 and token[0] == "r" and type(token[1]) is int and 0 <= token[1] < len(nodes):
            return objs[token[1]]
        return _atom_token(token, originals, remote)

    for i in _immutable_order(nodes):
        objs[i] = _build(nodes[i], resolve)
    for i, node in enumerate(nodes):
        if node["k"] in MUTABLE:
            _fill_mutable(objs[i], node, resolve)
    return [resolve(t) for t in message["v"]], objs


def _items(node):
    items = node.get("x")
    if node["k"] == "bytearray":
        if type(items) is not str:
            raise ValueError("malformed bytearray")
    elif type(items) is not list:
        raise ValueError(f"malformed {node['k']} node")
    return items


def _placeholder(node, originals):
    kind = node["k"]
    if "o" in node:  # one of our own objects, whose contents the candidate may have changed
        k = node["o"]
        if type(k) is not int or originals is None or not 0 <= k < len(originals):
            raise ValueError("malformed reference to an argument")
        obj = originals[k]
        if _kind(obj) != kind:
            raise ValueError("an argument came back as a different type")
        return obj
    if kind == "deque":
        maxlen = node.get("m")
        if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
            raise ValueError("malformed deque")
        return collections.deque(maxlen=maxlen)
    if kind == "ddict":
        factory = node.get("f")
        if factory is not None and factory not in FACTORIES:
            raise ValueError("malformed defaultdict")
        return collections.defaultdict(FACTORIES.get(factory))
    return {"list": list, "dict": dict, "set": set, "bytearray": bytearray, "odict": collections.OrderedDict,
            "counter": collections.Counter}[kind]()


def _immutable_order(nodes):
    """Immutable nodes, each after the immutable nodes it holds directly (mutable ones exist already)."""
    waiting, users, ready = {}, {}, []
    for i, node in enumerate(nodes):
        if node["k"] in IMMUTABLE:
            deps = {t[1] for t in _items(node) if type(t) is list and len(t) == 2 and t[0] == "r"
                    and type(t[1]) is int and 0 <= t[1] < len(nodes) and nodes[t[1]]["k"] in IMMUTABLE}
            if i in deps:
                raise ValueError("an immutable value that contains itself")
            waiting[i] = len(deps)
            for d in deps:
                users.setdefault(d, []).append(i)
            if not deps:
                ready.append(i)
    order = []
    while ready:
        i = ready.pop()
        order.append(i)
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) != len(waiting):
        raise ValueError("immutable values that contain each other")
    return order


def _build(node, resolve):
    kind, items = node["k"], [resolve(t) for t in _items(node)]
    if kind == "tuple":
        return tuple(items)
    if kind == "frozenset":
        return frozenset(items)
    if kind == "iter":
        return iter(items)
    if kind == "keys":
        return dict.fromkeys(items).keys()
    if kind == "values":
        return dict(enumerate(items)).values()
    if kind == "items":
        return dict(_pairs(items)).items()
    fields = node.get("f")
    if not (type(fields) is list and len(fields) == 2 and type(fields[0]) is str and type(fields[1]) is list
            and all(type(f) is str for f in fields[1]) and len(fields[1]) == len(items)):
        raise ValueError("malformed named tuple")
    key = (fields[0], tuple(fields[1]))
    if key not in _NAMEDTUPLES:  # namedtuple() checks that every name is an identifier
        _NAMEDTUPLES[key] = collections.namedtuple(fields[0], fields[1])
    return _NAMEDTUPLES[key](*items)


def _pairs(items):
    if len(items) % 2:
        raise ValueError("malformed mapping")
    return zip(items[::2], items[1::2], strict=True)


def _fill_mutable(obj, node, resolve):
    kind = node["k"]
    if kind == "bytearray":
        obj[:] = bytes.fromhex(node["x"])
        return
    items = [resolve(t) for t in _items(node)]
    if kind == "list":
        obj[:] = items
    elif kind == "set":
        obj.clear()
        obj.update(items)
    elif kind == "deque":
        obj.clear()
        obj.extend(items)
    else:
        pairs = list(_pairs(items))
        obj.clear()
        for k, v in pairs:
            obj[k] = v
