"""The `hfkit` command: one subcommand = one library call plus formatting.

torch and the models are imported inside the commands, never at module level, to keep `hfkit --help` quick.
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import Annotated, Any, Callable

import typer

from ..errors import HfkitError
from .io import emit_json, gather_texts, print_fields, print_table, read_records, shorten

app = typer.Typer(
    name="hfkit",
    help="Run, fine-tune and export HuggingFace models with hfkit: classify, tag, answer, fill masks, embed, search, generate, chat, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def command(name: str | None = None) -> Callable:
    """Register a subcommand whose hfkit errors end as `error: <message>` on stderr, exit code 2."""
    def register(function: Callable) -> Callable:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except HfkitError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None

        return app.command(name)(run)

    return register


def check_device(value: str | None) -> str | None:
    if value is None:
        return None
    import torch

    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise typer.BadParameter(str(err)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("CUDA is not available here (see `hfkit doctor`).")
    return value


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Aggregation(str, Enum):
    none = "none"
    simple = "simple"
    first = "first"
    average = "average"
    max = "max"


class Quantize(str, Enum):
    int8 = "int8"


QuantizeOption = Annotated[Quantize | None, typer.Option(
    help="int8: int8 feed-forward layers on CPU (opt-in, lossy: cosine to float32 >= 0.99, ~0.998 for sentences); "
         "fastest with --dtype bfloat16 on CPUs with VNNI/AVX512-BF16 or AMX; slower than float32 elsewhere.")]


def quantized(model):
    from ..nn.quantize import quantize_int8

    return quantize_int8(model)


Model = Annotated[str, typer.Argument(help="A local model folder or a Hub repo id (org/name).", show_default=False)]
Texts = Annotated[list[str] | None, typer.Argument(help="Input texts (or use --file).", show_default=False)]
File = Annotated[str | None, typer.Option(
    "--file", "-f", help="Read inputs from a file ('-' = stdin): one text a line, or JSONL objects with a \"text\" field.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document (the library's output) instead of tables.")]
Revision = Annotated[str | None, typer.Option(help="Hub revision: branch, tag or commit.")]
Device = Annotated[str | None, typer.Option(callback=check_device, help="Device to run on: cpu, cuda, cuda:1, ...")]
DtypeOption = Annotated[Dtype, typer.Option("--dtype", help="Weights dtype (auto: as the checkpoint stores them).")]
BatchSize = Annotated[int, typer.Option(min=1, help="Inputs per forward pass.")]


def load(auto_class: str, model: str, revision: str | None, device: str | None, dtype: Dtype) -> Any:
    """The model through its hfkit Auto class (`AutoModelForSequenceClassification`, ...)."""
    from ..models import auto

    return getattr(auto, auto_class).from_pretrained(model, revision=revision, device=device, dtype=dtype.value)


@command()
def classify(
    model: Model, texts: Texts = None, file: File = None,
    top_k: Annotated[int, typer.Option(min=0, help="Labels per text, best first (0 = all).")] = 1,
    json: Json = False, revision: Revision = None, device: Device = None, dtype: DtypeOption = Dtype.auto,
    batch_size: BatchSize = 32,
) -> None:
    """Text classification: the best labels and scores for each text."""
    texts = gather_texts(texts, file)
    loaded = load("AutoModelForSequenceClassification", model, revision, device, dtype)
    results = loaded.predict(texts, top_k=top_k or None, batch_size=batch_size)
    if json:
        return emit_json(results)
    rows = [[shorten(text) if rank == 0 else "", item["label"], item["score"]]
            for text, ranked in zip(texts, results) for rank, item in enumerate(ranked)]
    print_table(["text", "label", "score"], rows, sections=section_ends(results))


def section_ends(groups: list[list]) -> list[int]:
    """Row indices that close each group of a flattened list of groups."""
    ends, total = [], 0
    for group in groups:
        total += len(group)
        ends.append(total - 1)
    return ends


@command()
def ner(
    model: Model, texts: Texts = None, file: File = None,
    aggregation: Annotated[Aggregation, typer.Option(help="How tokens are merged into entities.")] = Aggregation.simple,
    json: Json = False, revision: Revision = None, device: Device = None, dtype: DtypeOption = Dtype.auto,
    batch_size: BatchSize = 32,
) -> None:
    """Token classification (named entities) for each text."""
    texts = gather_texts(texts, file)
    loaded = load("AutoModelForTokenClassification", model, revision, device, dtype)
    results = loaded.predict(texts, aggregation_strategy=aggregation.value, batch_size=batch_size)
    if json:
        return emit_json(results)
    rows = [[index + 1, entity["word"], entity.get("entity_group", entity.get("entity")), entity["score"],
             f"{entity['start']}-{entity['end']}"]
            for index, entities in enumerate(results) for entity in entities]
    print_table(["text #", "word", "entity", "score", "span"], rows, sections=section_ends(results))
    found = sum(map(len, results))
    typer.echo(f"{found} entit{'y' if found == 1 else 'ies'} in {len(texts)} text{'s' * (len(texts) != 1)}.")


@command()
def qa(
    model: Model,
    question: Annotated[str | None, typer.Option("--question", "-q", help="The question.")] = None,
    context: Annotated[str | None, typer.Option("--context", "-c", help="The text holding the answer.")] = None,
    file: Annotated[str | None, typer.Option(
        "--file", "-f", help="JSONL file ('-' = stdin): one {\"question\", \"context\"} object a line.")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Answers per question, best first.")] = 1,
    json: Json = False, revision: Revision = None, device: Device = None, dtype: DtypeOption = Dtype.auto,
    batch_size: BatchSize = 32,
) -> None:
    """Extractive question answering: the answer span in the context."""
    if (question is None) != (context is None):
        raise typer.BadParameter("Pass --question and --context together.", param_hint="--question/--context")
    pairs = ([{"question": question, "context": context}] if question is not None else [])
    pairs += read_records(file, ("question", "context")) if file else []
    if not pairs:
        raise typer.BadParameter("No question given: pass --question Q --context C, or --file with JSONL rows.",
                                 param_hint="--question/--file")
    loaded = load("AutoModelForQuestionAnswering", model, revision, device, dtype)
    results = loaded.answer([pair["question"] for pair in pairs], [pair["context"] for pair in pairs],
                            top_k=top_k, batch_size=batch_size)
    if json:
        return emit_json(results)
    ranked = [result if isinstance(result, list) else [result] for result in results]
    rows = [[shorten(pair["question"], 40) if rank == 0 else "", item["answer"], item["score"], f"{item['start']}-{item['end']}"]
            for pair, answers in zip(pairs, ranked) for rank, item in enumerate(answers)]
    print_table(["question", "answer", "score", "span"], rows, sections=section_ends(ranked))


@command("fill-mask")
def fill_mask(
    model: Model, texts: Texts = None, file: File = None,
    top_k: Annotated[int, typer.Option(min=1, help="Candidates per mask, best first.")] = 5,
    json: Json = False, revision: Revision = None, device: Device = None, dtype: DtypeOption = Dtype.auto,
    batch_size: BatchSize = 32,
) -> None:
    """Masked-token prediction: the best tokens for the one mask token of each text."""
    texts = gather_texts(texts, file)
    loaded = load("AutoModelForMaskedLM", model, revision, device, dtype)
    results = loaded.fill_mask(texts, top_k=top_k, batch_size=batch_size)
    if json:
        return emit_json(results)
    rows = [[rank + 1, item["token_str"], item["score"], item["sequence"]]
            for candidates in results for rank, item in enumerate(candidates)]
    print_table(["rank", "token", "score", "sequence"], rows, sections=section_ends(results))


def embedding_model(model: str | None) -> str:
    from ..defaults import default_embedding_model

    return model if model is not None else str(default_embedding_model())


EmbedModel = Annotated[str | None, typer.Option(
    "--model", "-m", help="Embedding model folder or Hub repo id [default: the packaged all-MiniLM-L6-v2].")]


@command()
def embed(
    texts: Texts = None, file: File = None, model: EmbedModel = None,
    normalize: Annotated[bool | None, typer.Option(
        "--normalize/--no-normalize", help="Force unit-length vectors on/off [default: as the model folder says].")] = None,
    json: Json = False, revision: Revision = None, device: Device = None, dtype: DtypeOption = Dtype.auto,
    batch_size: BatchSize = 32,
    quantize: QuantizeOption = None,
) -> None:
    """Sentence embeddings, as sentence-transformers' encode gives them (float32: exactly; --dtype bfloat16 and
    --quantize int8 trade a little accuracy for speed on CPU)."""
    texts = gather_texts(texts, file)
    loaded = load("AutoModel", embedding_model(model), revision, device, dtype)
    if quantize:
        quantized(loaded)
    vectors = loaded.embed(texts, normalize=normalize, batch_size=batch_size)
    if json:
        return emit_json(vectors.tolist(), indent=None)
    rows = [[shorten(text, 40), f"{vector.norm().item():.4f}", " ".join(f"{x:+.4f}" for x in vector[:4].tolist()) + " …"]
            for text, vector in zip(texts, vectors)]
    print_table(["text", "norm", "first values"], rows,
                title=f"{tuple(vectors.shape)} {str(vectors.dtype).removeprefix('torch.')} embeddings")


@command()
def search(
    queries: Annotated[list[str] | None, typer.Argument(
        help="Search queries [default: a few built-in examples].", show_default=False)] = None,
    corpus: Annotated[str | None, typer.Option(
        help="Sentences to search: one a line, or JSONL with \"text\" [default: a built-in corpus of 20].")] = None,
    model: EmbedModel = None,
    top_k: Annotated[int, typer.Option(min=1, help="Results per query.")] = 3,
    json: Json = False, revision: Revision = None, device: Device = None, dtype: DtypeOption = Dtype.auto,
    batch_size: BatchSize = 32,
    quantize: QuantizeOption = None,
) -> None:
    """Semantic search: rank the corpus sentences by cosine similarity to each query."""
    from .corpus import CORPUS, QUERIES

    queries = list(queries or QUERIES)
    sentences = gather_texts(None, corpus, "corpus sentences") if corpus else list(CORPUS)
    loaded = load("AutoModel", embedding_model(model), revision, device, dtype)
    if quantize:
        quantized(loaded)
    ranked = loaded.search(queries, sentences, top_k=top_k, batch_size=batch_size)
    hits = [[{"rank": rank + 1, "score": hit["score"], "corpus_id": hit["corpus_id"], "sentence": sentences[hit["corpus_id"]]}
             for rank, hit in enumerate(results)] for results in ranked]
    if json:
        return emit_json([{"query": query, "results": results} for query, results in zip(queries, hits)])
    rows = [[query if hit["rank"] == 1 else "", hit["rank"], hit["score"], hit["sentence"]]
            for query, results in zip(queries, hits) for hit in results]
    print_table(["query", "rank", "score", "sentence"], rows, sections=section_ends(hits),
                title=f"Top {min(top_k, len(sentences))} of {len(sentences)} sentences")


@command()
def info(model: Model, json: Json = False, revision: Revision = None) -> None:
    """What a model folder holds: family, architectures, heads, parameters, labels, files, tokenizer."""
    from .describe import model_info

    facts = model_info(model, revision)
    if json:
        return emit_json(facts)
    files = facts.pop("files")
    print_fields({**facts, "parameters": f"{facts['parameters']:,}" if facts["parameters"] is not None else None},
                 title=model)
    print_table(["file", "size"], [[item["path"], human_size(item["size"])] for item in files])


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}"


@command()
def doctor(json: Json = False) -> None:
    """The environment: versions, CUDA, the HF cache and Hub settings, the default model."""
    from .describe import environment

    facts = environment()
    if json:
        return emit_json(facts)
    print_fields(facts, title="hfkit doctor")


def main() -> None:
    app()


from . import generate_commands  # noqa: F401,E402  (registers generate, chat)
from . import export_commands  # noqa: F401,E402  (registers export, verify-export, verify-matrix, convert, init)
from . import train_commands  # noqa: F401,E402  (registers train, pretrain)
from . import bench_commands  # noqa: F401,E402  (registers bench)
