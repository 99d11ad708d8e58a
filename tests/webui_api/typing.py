"""A model of the request models in the webui's modules/api/typing.py (v4.7.3), as the steering extension
meets them: pydantic models built on ``GenerationOptions`` (so a field the model lacks is dropped from the
body, pydantic's default) and ``to_dict``, which hands the validated model's attributes on as the body.
Only the fields this fake host's generation reads are modelled."""
from pydantic import BaseModel, Field


class GenerationOptions(BaseModel):
    """Fields both completion routes take; each ends up in the generation state under its own name."""

    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    seed: int = -1
    stop: list[str] | str | None = None
    stream: bool = False
    add_bos_token: bool = True
    skip_special_tokens: bool = True


class CompletionRequest(GenerationOptions):
    prompt: str


class ChatCompletionRequest(GenerationOptions):
    messages: list[dict] = Field(min_length=1)
    mode: str = "instruct"  # the API's default; the chat tab's is "chat"
    character: str | None = None  # kept raw in the state: the extension reads which character was named
    context: str | None = None


def to_dict(model: BaseModel) -> dict:
    """The model's attribute dictionary itself, as the webui passes it: every field, a subclass's too."""
    return vars(model)
