"""Chat templates: conversations → the prompt string, rendered exactly as transformers' `apply_chat_template` does.

The template runs in jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
loopcontrols extension, a no-op `{% generation %}` block, and transformers' globals and filters: `raise_exception`,
`strftime_now`, a non-escaping `tojson`, a restricted `dict` and `namespace`. Everything the template sees is first
rebuilt from plain JSON-like data, as transformers does.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from .errors import HfkitError

CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # the first is the one templates read


class ChatTemplateError(HfkitError, ValueError):
    """A chat template that cannot be compiled or rendered, or a conversation it rejects."""


def _jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError as err:  # pragma: no cover - jinja2 is a dependency
        raise ChatTemplateError("Chat templates need jinja2>=3.1.6. Fix: `pip install -U jinja2`.") from err
    if tuple(int(p) for p in jinja2.__version__.split(".")[:3] if p.isdigit()) < (3, 1, 6):
        raise ChatTemplateError(f"Chat templates need jinja2>=3.1.6 (older ones have sandbox escapes); found "
                                f"{jinja2.__version__}. Fix: `pip install -U jinja2`.")
    return jinja2


def _raise_exception(message):
    import jinja2.exceptions

    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """jinja's tojson escapes HTML characters; transformers' does not, and takes json.dumps' layout options."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict(...)` / `dict.fromkeys(...)` in templates, without exposing the type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


@lru_cache(maxsize=64)
def compile_chat_template(template: str):
    """The compiled jinja template (cached per template string)."""
    jinja2 = _jinja()

    class GenerationBlock(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` renders its body (assistant-mask tracking is not implemented)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    class TemplateNamespace(jinja2.utils.Namespace):
        """`namespace(...)` refusing underscore-prefixed attributes (CPython internals)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}.")

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(),
                       namespace=TemplateNamespace)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise ChatTemplateError(f"The chat template has a syntax error at line {err.lineno}: {err.message}. "
                                f"Fix: correct the template (or pass a working one as chat_template=...).") from None


def plain_data(value: Any) -> Any:
    """Rebuild `value` from plain JSON-like types, as transformers does before the sandbox sees it; other objects
    (images, arrays, tensors) become an inert placeholder such as "<Tensor>"."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_data(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain_data(item) for item in value)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic):  # np.bool_(False) must not become a truthy placeholder
        return plain_data(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain_data(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models
        return plain_data(value.model_dump())
    return f"<{type(value).__name__}>"


def _alias_reasoning(chat: list) -> list:
    """Older names for a message's reasoning also fill `reasoning_content` (and `thinking`, for gpt-oss templates)."""
    out = []
    for message in chat:
        if isinstance(message, dict):
            reasoning = next((message[key] for key in REASONING_FIELDS if message.get(key) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def _tool_schemas(tools):
    if tools is None:
        return None
    for tool in tools:
        if not isinstance(tool, dict):
            raise ChatTemplateError(
                f"Tools must be JSON schemas (dicts such as {{'type': 'function', 'function': {{'name': ..., "
                f"'description': ..., 'parameters': {{...}}}}}}), got {type(tool).__name__}. hfkit does not convert "
                f"Python functions to schemas; fix: pass the schema dict (transformers.utils.get_json_schema(fn) "
                f"writes one).")
    return list(tools)


def render_chat_template(template: str, messages, add_generation_prompt: bool = False, tools: list | None = None,
                         documents: list | None = None, continue_final_message: bool | str = False, **extra) -> str:
    """The prompt string for one conversation (a list of {"role": ..., "content": ...} dicts), as transformers'
    `apply_chat_template(..., tokenize=False)`. `extra` becomes template variables: pass the special tokens
    (bos_token=..., eos_token=...) and any template option (e.g. enable_thinking=False) here."""
    jinja2 = _jinja()
    if not isinstance(template, str):
        raise ChatTemplateError(f"A chat template must be a jinja template string, got {type(template).__name__}.")
    if hasattr(messages, "messages"):  # a Conversation-like object
        messages = messages.messages
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatTemplateError("Cannot apply a chat template to an empty conversation: give at least one message.")
    if continue_final_message and add_generation_prompt:
        raise ChatTemplateError(
            "continue_final_message and add_generation_prompt are not compatible: use continue_final_message to let the "
            "model continue the final message, add_generation_prompt to start a new assistant message.")
    compiled = compile_chat_template(template)
    # keys whose value is None are dropped (APIs send content=None / tool_calls=None, which templates mishandle)
    chat = [{k: v for k, v in m.items() if v is not None} if isinstance(m, Mapping) else m for m in messages]
    chat = plain_data(chat)
    for message in chat:
        if not isinstance(message, dict):
            raise ChatTemplateError(f"Chat messages must be dicts like {{'role': 'user', 'content': 'Hi'}}, got {message!r}.")
    chat = _alias_reasoning(chat)
    tool_schemas = plain_data(_tool_schemas(tools))
    if documents is not None and not all(isinstance(d, dict) for d in documents):
        raise ChatTemplateError("Documents must be a list of dicts with 'title' and 'text' keys.")
    documents, extra = plain_data(documents), plain_data(extra)

    final_message = None
    if continue_final_message:
        field = continue_final_message if isinstance(continue_final_message, str) else "content"
        final_message = chat[-1].get(field)
        if final_message is None:
            raise ChatTemplateError(f'continue_final_message is set but the final message has no "{field}" to continue.')
        fields = [f for f in REASONING_FIELDS if chat[-1].get(f) == final_message] if field in REASONING_FIELDS else [field]
        if not any(f in template for f in fields):
            raise ChatTemplateError(f'continue_final_message is set to "{field}", but the chat template never reads that field.')
        if isinstance(final_message, (list, tuple)):  # content blocks: continue the last text block
            for block in reversed(final_message):
                if "text" in block:
                    final_message = block["text"]
                    block["text"] = block["text"] + CONTINUE_TAG
                    break
            else:
                raise ChatTemplateError("continue_final_message is set but the final message has no text block to continue.")
        else:
            for f in fields:
                chat[-1][f] = chat[-1][f] + CONTINUE_TAG

    try:
        rendered = compiled.render(messages=chat, tools=tool_schemas, documents=documents,
                                   add_generation_prompt=add_generation_prompt, **extra)
    except jinja2.exceptions.SecurityError as err:
        raise ChatTemplateError(f"The chat template tried an operation the sandbox forbids: {err}") from None
    except jinja2.exceptions.UndefinedError as err:
        raise ChatTemplateError(f"The chat template used an undefined value: {err}. Fix: pass the variable it needs "
                                f"as a keyword argument, or check the messages' keys.") from None
    except jinja2.exceptions.TemplateError as err:  # raise_exception(...) and other template errors
        raise ChatTemplateError(f"The chat template rejected the conversation: {err}") from None

    if continue_final_message:
        if final_message.strip() not in rendered or CONTINUE_TAG.strip() not in rendered:
            raise ChatTemplateError(
                "continue_final_message is set but the final message does not appear in the rendered chat (the "
                f"template changes or drops it). Final message: {final_message.strip()!r}; rendered chat:\n{rendered}")
        at = rendered.rindex(CONTINUE_TAG.strip())
        if rendered[at:at + len(CONTINUE_TAG)] == CONTINUE_TAG:
            rendered = rendered[:at]
        else:  # the template trimmed the message's trailing spacing
            rendered = rendered[:at].rstrip()
    return rendered


def _pick_template(tokenizer, chat_template: str | None, tools) -> str:
    """transformers' get_chat_template: the argument (a template, or a name in a dict of templates), else the
    tokenizer's own."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):
        if chat_template in own:
            return own[chat_template]
        if chat_template is None:
            name = "tool_use" if tools is not None and "tool_use" in own else "default"
            if name not in own:
                raise ChatTemplateError(f"This tokenizer has several chat templates and no default: pass "
                                        f"chat_template= one of {sorted(own)}.")
            return own[name]
    if chat_template is None:
        chat_template = own
    if chat_template is None:
        raise ChatTemplateError(
            "This tokenizer has no chat_template (its folder has no chat_template.jinja and tokenizer_config.json no "
            "\"chat_template\"). Fix: pass one, e.g. tokenizer.apply_chat_template(messages, chat_template=\"{% for m "
            "in messages %}{{ m['role'] }}: {{ m['content'] }}\\n{% endfor %}\"), or set tokenizer.chat_template.")
    return chat_template


def apply_chat_template(tokenizer, conversation, tools=None, documents=None, chat_template=None,
                        add_generation_prompt=False, continue_final_message=False, tokenize=True, padding=False,
                        truncation=False, max_length=None, return_tensors=None, return_dict=True,
                        tokenizer_kwargs=None, sanitize_control_tokens=False, return_assistant_tokens_mask=False,
                        **kwargs):
    """`Tokenizer.apply_chat_template`, as transformers': a str (tokenize=False), else the tokenizer's output for the
    rendered text without added special tokens (a BatchEncoding; its input_ids with return_dict=False).
    A list of conversations gives a list of strs / a batch."""
    if sanitize_control_tokens or return_assistant_tokens_mask:
        raise ChatTemplateError("sanitize_control_tokens and return_assistant_tokens_mask are not supported by hfkit.")
    template = _pick_template(tokenizer, chat_template, tools)
    if isinstance(conversation, (list, tuple)) and not conversation:
        raise ChatTemplateError("Cannot apply a chat template to an empty conversation: give at least one message.")
    batched = isinstance(conversation, (list, tuple)) and (
        isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages"))
    conversations = conversation if batched else [conversation]
    from .tokenizer import SPECIAL_TOKENS

    variables = {name: str(getattr(tokenizer, name)) for name in SPECIAL_TOKENS if getattr(tokenizer, name, None) is not None}
    variables.update(kwargs)  # template variables overrule the special tokens
    rendered = [render_chat_template(template, chat, add_generation_prompt=add_generation_prompt, tools=tools,
                                     documents=documents, continue_final_message=continue_final_message, **variables)
                for chat in conversations]
    if not tokenize:
        return rendered if batched else rendered[0]
    out = tokenizer(rendered if batched else rendered[0], padding=padding, truncation=truncation,
                    max_length=max_length, add_special_tokens=False, return_tensors=return_tensors,
                    **(tokenizer_kwargs or {}))
    return out if return_dict else out["input_ids"]
