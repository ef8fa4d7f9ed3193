"""Write a deterministic sample of "contexts" records: API questions with retrieved docs.

Each line is one JSON object: a query about a library API, the library versions it is
about, and the documentation a retriever found for it (``context``), which the fleet's
contexts template turns into a prompt. Context lengths are deliberately uneven, from one
sentence to several paragraphs, as real retrieval output is. A few retrievals failed
(``success`` false, empty context).

Usage::

    python examples/make_contexts.py [N] [--seed S] [-o FILE]   # default 300 records to stdout
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

MAX_CONTEXT_CHARS = 1500


@dataclass(frozen=True)
class Api:
    """One documented API: what the generated docs and questions talk about."""

    name: str
    signature: str
    summary: str
    params: tuple[tuple[str, str], ...]
    returns: str
    example: str


APIS = (
    Api(
        "numpy.array",
        "numpy.array(object, dtype=None, *, copy=True, order='K', ndmin=0)",
        "Create an array from any object exposing the array interface or a nested sequence.",
        (
            ("object", "an array, any object exposing the array interface, or a sequence"),
            ("dtype", "the desired data-type for the array; inferred when omitted"),
            ("copy", "if true (default), the object is copied"),
            ("ndmin", "the minimum number of dimensions the result should have"),
        ),
        "ndarray: an array object satisfying the specified requirements.",
        ">>> np.array([[1, 2], [3, 4]], dtype=float).shape\n(2, 2)",
    ),
    Api(
        "numpy.reshape",
        "numpy.reshape(a, newshape, order='C')",
        "Give a new shape to an array without changing its data.",
        (
            ("a", "array to be reshaped"),
            ("newshape", "int or tuple of ints; one dimension may be -1 and is then inferred"),
            ("order", "'C', 'F' or 'A': the index order used to read and place elements"),
        ),
        "ndarray: a new view object if possible, otherwise a copy.",
        ">>> np.reshape(np.arange(6), (3, -1))\narray([[0, 1], [2, 3], [4, 5]])",
    ),
    Api(
        "numpy.linalg.solve",
        "numpy.linalg.solve(a, b)",
        "Solve a linear matrix equation, or system of linear scalar equations.",
        (
            ("a", "coefficient matrix of shape (..., M, M)"),
            ("b", "ordinate or dependent variable values"),
        ),
        "ndarray: solution to the system a x = b, with the shape of b.",
        ">>> np.linalg.solve([[3, 1], [1, 2]], [9, 8])\narray([2., 3.])",
    ),
    Api(
        "pandas.read_csv",
        "pandas.read_csv(filepath_or_buffer, *, sep=',', header='infer', ...)",
        "Read a comma-separated values (csv) file into a DataFrame.",
        (
            ("filepath_or_buffer", "a path, URL or file-like object"),
            ("sep", "delimiter to use; None tries to detect it with the Python engine"),
            ("header", "row number(s) to use as the column names"),
            ("usecols", "return a subset of the columns"),
            ("parse_dates", "columns to parse as dates"),
        ),
        "DataFrame or TextFileReader: a comma-separated values file as a two-dimensional table.",
        ">>> df = pd.read_csv('data.csv', usecols=['a', 'b'])",
    ),
    Api(
        "pandas.DataFrame.groupby",
        "DataFrame.groupby(by=None, axis=0, level=None, as_index=True)",
        "Group a DataFrame using a mapper or by a Series of columns.",
        (
            ("by", "mapping, function, label, or list of labels used to determine the groups"),
            ("level", "if the axis is a MultiIndex, group by a particular level or levels"),
            ("as_index", "return an object with group labels as the index"),
            ("dropna", "if true, NA values in group keys are dropped"),
        ),
        "DataFrameGroupBy: an object holding information about the groups.",
        ">>> df.groupby('city')['sales'].sum()",
    ),
    Api(
        "pandas.merge",
        "pandas.merge(left, right, how='inner', on=None, left_on=None, ...)",
        "Merge DataFrame or named Series objects with a database-style join.",
        (
            ("how", "one of 'left', 'right', 'outer', 'inner', 'cross'"),
            ("on", "column or index level names to join on"),
            ("suffixes", "suffixes to apply to overlapping column names"),
            ("validate", "check whether the merge is one_to_one, one_to_many, ..."),
        ),
        "DataFrame: a DataFrame of the two merged objects.",
        ">>> pd.merge(orders, customers, on='customer_id', how='left')",
    ),
    Api(
        "requests.get",
        "requests.get(url, params=None, **kwargs)",
        "Send a GET request.",
        (
            ("url", "URL for the new Request object"),
            ("params", "dictionary, list of tuples or bytes to send in the query string"),
            ("timeout", "how many seconds to wait for the server to send data"),
            ("headers", "dictionary of HTTP headers to send"),
        ),
        "Response: the server's response to the request.",
        ">>> r = requests.get('https://api.example.com/items', timeout=5)\n>>> r.status_code\n200",
    ),
    Api(
        "requests.Session",
        "class requests.Session",
        "A Requests session: provides cookie persistence, connection pooling and configuration.",
        (
            ("auth", "default authentication tuple or object to attach to each request"),
            ("headers", "a case-insensitive dictionary of headers sent with every request"),
            ("verify", "SSL verification default"),
        ),
        "Session: use it as a context manager so that it is closed.",
        ">>> with requests.Session() as s:\n...     s.get('https://httpbin.org/get')",
    ),
    Api(
        "torch.tensor",
        "torch.tensor(data, *, dtype=None, device=None, requires_grad=False)",
        "Constructs a tensor with no autograd history by copying data.",
        (
            ("data", "initial data: a list, tuple, NumPy ndarray, scalar, and other types"),
            ("dtype", "the desired data type of the returned tensor"),
            ("device", "the device of the constructed tensor"),
            ("requires_grad", "if autograd should record operations on the returned tensor"),
        ),
        "Tensor: a new tensor holding a copy of data.",
        ">>> torch.tensor([[0.1, 1.2], [2.2, 3.1]]).shape\ntorch.Size([2, 2])",
    ),
    Api(
        "torch.nn.Linear",
        "class torch.nn.Linear(in_features, out_features, bias=True)",
        "Applies an affine linear transformation to the incoming data: y = xA^T + b.",
        (
            ("in_features", "size of each input sample"),
            ("out_features", "size of each output sample"),
            ("bias", "if set to False, the layer will not learn an additive bias"),
        ),
        "Module: input (*, in_features) gives output (*, out_features).",
        ">>> m = nn.Linear(20, 30)\n>>> m(torch.randn(128, 20)).size()\ntorch.Size([128, 30])",
    ),
    Api(
        "torch.utils.data.DataLoader",
        "torch.utils.data.DataLoader(dataset, batch_size=1, ...)",
        "Combines a dataset and a sampler, and provides an iterable over the given dataset.",
        (
            ("dataset", "dataset from which to load the data"),
            ("batch_size", "how many samples per batch to load"),
            ("shuffle", "set to True to have the data reshuffled at every epoch"),
            ("num_workers", "how many subprocesses to use for data loading"),
        ),
        "DataLoader: an iterable of batches.",
        ">>> loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=4)",
    ),
    Api(
        "sklearn.model_selection.train_test_split",
        "train_test_split(*arrays, test_size=None, train_size=None, random_state=None, ...)",
        "Split arrays or matrices into random train and test subsets.",
        (
            ("test_size", "float for a proportion of the dataset, int for an absolute number"),
            ("random_state", "controls the shuffling applied before the split"),
            ("stratify", "if not None, data is split in a stratified fashion"),
        ),
        "list: the train-test split of the inputs, length 2 * len(arrays).",
        ">>> X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2)",
    ),
    Api(
        "matplotlib.pyplot.plot",
        "matplotlib.pyplot.plot(*args, scalex=True, scaley=True, ...)",
        "Plot y versus x as lines and/or markers.",
        (
            ("x, y", "the horizontal / vertical coordinates of the data points"),
            ("fmt", "a format string, e.g. 'ro' for red circles"),
            ("label", "a label for the legend"),
        ),
        "list of Line2D: the lines representing the plotted data.",
        ">>> plt.plot([1, 2, 3], [4, 5, 6], 'g--', label='trend')",
    ),
    Api(
        "json.loads",
        "json.loads(s, *, cls=None, object_hook=None, parse_float=None, ...)",
        "Deserialize s (a str, bytes or bytearray containing a JSON document) to an object.",
        (
            ("s", "the JSON document"),
            ("object_hook", "called with the result of any object literal decoded"),
            ("parse_float", "called with the string of every JSON float to be decoded"),
        ),
        "object: the Python object; raises JSONDecodeError if the document is invalid.",
        ">>> json.loads('{\"a\": [1, 2.5, null]}')\n{'a': [1, 2.5, None]}",
    ),
    Api(
        "flask.Flask.route",
        "Flask.route(rule, **options)",
        "Decorate a view function to register it with the given URL rule and options.",
        (
            ("rule", "the URL rule string, e.g. '/user/<int:id>'"),
            ("methods", "the HTTP methods this rule is limited to"),
        ),
        "Callable: the decorator.",
        ">>> @app.route('/hello', methods=['GET'])\n... def hello():\n...     return 'Hello'",
    ),
    Api(
        "sqlalchemy.create_engine",
        "sqlalchemy.create_engine(url, **kwargs)",
        "Create a new Engine instance, the starting point for any SQLAlchemy application.",
        (
            ("url", "a database URL such as postgresql+psycopg://user:pass@host/db"),
            ("echo", "if True, the Engine logs all statements"),
            ("pool_size", "the number of connections to keep open in the pool"),
        ),
        "Engine: a factory for database connections.",
        ">>> engine = create_engine('sqlite:///app.db', echo=True)",
    ),
)

VERSIONS = {
    "numpy": ["1.16.6", "1.19.5", "1.21.6", "1.24.4", "1.26.4", "2.0.2"],
    "pandas": ["0.25.3", "1.1.5", "1.3.5", "1.5.3", "2.1.4", "2.2.3"],
    "requests": ["2.22.0", "2.25.1", "2.28.2", "2.31.0", "2.32.3"],
    "torch": ["1.4.0", "1.10.2", "1.13.1", "2.0.1", "2.3.1", "2.5.1"],
    "sklearn": ["0.22.2", "0.24.2", "1.0.2", "1.3.2", "1.5.2"],
    "matplotlib": ["3.1.3", "3.3.4", "3.5.3", "3.7.5", "3.9.2"],
    "json": ["2.0.9"],  # json.__version__, the same in every Python 3
    "flask": ["1.1.4", "2.0.3", "2.3.3", "3.0.3"],
    "sqlalchemy": ["1.3.24", "1.4.52", "2.0.36"],
}

QUERIES = (
    "How to use {api}?",
    "What does {api} return?",
    "What are the parameters of {api}?",
    "How do I pass {param} to {api}?",
    "What is the default value of {param} in {api}?",
    "Why does {api} raise an error when {param} is None?",
    "Can you show an example of {api} with {param}?",
    "Is {api} available in {lib} {version}?",
    "What changed in {api} between versions?",
    "how to call {short} with a custom {param}",
    "{short} {param} example",
    "Difference between {api} and {other}?",
)

METHODS = ("exact_api_match", "fuzzy_api_match", "module_docs", "bm25", "embedding_similarity")

NOTES = (
    "Changed in version {version}: the default of {param} changed; pass it explicitly to "
    "keep the old behaviour.",
    "Deprecated since version {version}: passing {param} positionally is deprecated and "
    "will raise a TypeError in a future release.",
    "Note: {short} does not modify its input in place; it returns a new object.",
    "Warning: for large inputs this call can use a lot of memory — consider processing "
    "the data in chunks.",
    "See also: {other}, which covers the common case with fewer options.",
    "Requires {lib} ≥ {version}. Earlier releases accept only a subset of the parameters.",
)

# Longer prose a documentation page carries after the reference part.
DISCUSSION = (
    "Notes\n{short} is implemented on top of lower-level routines of {lib}, so most of "
    "the work happens outside the Python interpreter. Calling it in a tight Python loop "
    "is nevertheless slow, because every call pays the cost of argument validation and of "
    "allocating a new result. Batch the inputs and call it once whenever possible; for "
    "very large inputs, process the data in chunks that fit comfortably in memory.",
    "Thread safety\nThe function holds no global state and may be called from several "
    "threads at once. Objects it returns are not synchronised, however: if two threads "
    "modify the same result, protect it with a lock. In {lib} {version} the global "
    "configuration it reads is copied on first use, so changing the configuration later "
    "does not affect calls already in progress.",
    "Error handling\nInvalid values of {param} raise ValueError with a message naming "
    "the offending argument. Type errors are raised before any work is done, so a failed "
    "call leaves no partial result behind. Network and file errors propagate unchanged; "
    "wrap the call in a retry loop if the underlying resource is known to be flaky.",
    "Migration guide\nCode written for releases before {version} usually keeps working, "
    "but several keyword arguments were renamed and the old spellings now emit a "
    "FutureWarning. Replace them as the warning suggests, run the test suite with warnings "
    "turned into errors, and pin {lib} in your requirements so that an upgrade is a "
    "deliberate decision rather than a surprise on the next deployment.",
)


def _context(rng: random.Random, api: Api, lib: str, version: str, other: str) -> str:
    """Documentation for ``api``, from one sentence to several paragraphs."""
    short = api.name.rsplit(".", 1)[-1]
    param = rng.choice(api.params)[0]
    shape = rng.choices(("sentence", "medium", "long"), weights=(3, 4, 3))[0]
    if shape == "sentence":
        return rng.choice((api.summary, f"{api.signature}: {api.summary}"))
    params = "\n".join(f"{name} : {text}." for name, text in api.params)
    parts = [
        f"{api.signature}\n\n{api.summary}",
        f"Parameters\n{params}",
        f"Returns\n{api.returns}",
        f"Examples\n{api.example}",
    ]
    notes = [
        n.format(version=version, param=param, short=short, other=other, lib=lib)
        for n in rng.sample(NOTES, k=rng.randint(1, 3))
    ]
    if shape == "medium":
        parts = [parts[0], *rng.sample(parts[1:], k=1), notes[0]]
    else:
        discussion = [
            d.format(version=version, param=param, short=short, lib=lib)
            for d in rng.sample(DISCUSSION, k=rng.randint(1, 3))
        ]
        parts = [*parts, *discussion, *notes]
    text = "\n\n".join(parts)
    if len(text) > MAX_CONTEXT_CHARS:  # retrievers cap their output; cut at a word
        text = text[:MAX_CONTEXT_CHARS].rsplit(" ", 1)[0] + " ..."
    return text


def records(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` records; the same ``n`` and ``seed`` always give the same records."""
    rng = random.Random(seed)
    emitted = 0
    for original in itertools.count():
        api = rng.choice(APIS)
        lib = api.name.split(".", 1)[0]
        version = rng.choice(VERSIONS[lib])
        dependencies = {lib: version}
        if lib in ("pandas", "sklearn", "matplotlib") and rng.random() < 0.6:
            dependencies["numpy"] = rng.choice(VERSIONS["numpy"])
        other = rng.choice(
            [a.name for a in APIS if a.name.startswith(lib) and a is not api]
            or [a.name for a in APIS if a is not api]
        )
        # Several queries are asked about one original item, as in the source data set.
        for query_index in range(rng.randint(1, 4)):
            if emitted == n:
                return
            query = rng.choice(QUERIES).format(
                api=api.name,
                short=api.name.rsplit(".", 1)[-1],
                lib=lib,
                version=version,
                param=rng.choice(api.params)[0],
                other=other,
            )
            success = rng.random() > 0.03
            context = _context(rng, api, lib, version, other) if success else ""
            key = json.dumps([api.name, query, dependencies], sort_keys=True)
            yield {
                "id": f"item_{emitted}",
                "original_item_id": f"original_{original}",
                "query_index": query_index,
                "dedup_key": hashlib.sha1(key.encode()).hexdigest()[:16],
                "query": query,
                "target_api": api.name,
                "dependencies": dependencies,
                "retrieval_method": rng.choice(METHODS) if success else "none",
                "context": context,
                "context_length": len(context),
                "retrieval_time": round(rng.uniform(0.01, 0.4 if success else 2.0), 3),
                "success": success,
            }
            emitted += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=300, help="number of records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            _write(records(args.n, args.seed), out)
    else:
        _write(records(args.n, args.seed), sys.stdout)


def _write(lines: Iterable[dict[str, Any]], out: TextIO) -> None:
    for record in lines:
        # ensure_ascii=False: the file stays readable and keeps its non-ASCII characters.
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
