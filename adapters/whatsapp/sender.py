"""Agents' replies out to WhatsApp over the Graph API.

Text goes as plain text without link previews, split at WhatsApp's 4,096 characters. Files are
uploaded first (``POST /{phone-number-id}/media``) and sent by their media id: JPEG and PNG as
images, MP4 and 3GP as video, the audio types WhatsApp plays as audio, anything else as a
document with its name. A template (outside the 24-hour window) goes as ``type: template`` with
its body parameters.

Like Telegram, the Cloud API has no idempotency key: a reply that failed half-way is sent whole
again on its retry, so the customer may see its first part twice rather than lose the rest.
"""

from __future__ import annotations

from typing import Any

from adapters.telegram.sender import split_text
from adapters.whatsapp.graph import GraphClient
from bot.errors import PermanentDeliveryError
from bot.shapes import Attachment, OutboundReply, TemplateMessage

MAX_TEXT = 4096
_IMAGE = {"image/jpeg", "image/png"}
_VIDEO = {"video/mp4", "video/3gpp"}
_AUDIO = {"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}
# WhatsApp's limits per kind; a bigger file goes as a document (up to 100 MB).
_IMAGE_BYTES = 5 * 1024 * 1024
_MEDIA_BYTES = 16 * 1024 * 1024
_DOCUMENT_BYTES = 100 * 1024 * 1024


def media_kind(attachment: Attachment) -> str:
    """How WhatsApp takes a file: image, video, audio or document."""
    content_type = attachment.content_type.split(";")[0].strip().lower()
    size = len(attachment.data)
    if content_type in _IMAGE and size <= _IMAGE_BYTES:
        return "image"
    if content_type in _VIDEO and size <= _MEDIA_BYTES:
        return "video"
    if content_type in _AUDIO and size <= _MEDIA_BYTES:
        return "audio"
    return "document"


def template_body(template: TemplateMessage) -> dict[str, Any]:
    """The ``template`` object of a template message."""
    body: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if template.parameters:
        body["components"] = [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": p} for p in template.parameters],
            }
        ]
    return body


class WhatsAppReplySender:
    """Implements ``bot.ports.ReplySender`` for WhatsApp."""

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph

    async def send(self, reply: OutboundReply) -> str:
        to = reply.thread_key or reply.to_address.lstrip("+")
        if not to.isdigit():
            raise PermanentDeliveryError("this conversation has no WhatsApp number to answer")
        sent: list[str] = []
        if reply.template is not None:
            message = {"to": to, "type": "template", "template": template_body(reply.template)}
            return await self.graph.send(message)
        for part in split_text(reply.text, MAX_TEXT):
            message = {"to": to, "type": "text", "text": {"preview_url": False, "body": part}}
            sent.append(await self.graph.send(message))
        for attachment in reply.attachments:
            sent.append(await self._send_file(to, attachment))
        return ",".join(sent)

    async def _send_file(self, to: str, attachment: Attachment) -> str:
        if len(attachment.data) > _DOCUMENT_BYTES:
            raise PermanentDeliveryError(
                f"{attachment.filename} is over WhatsApp's 100 MB: share a link instead"
            )
        kind = media_kind(attachment)
        content_type = attachment.content_type.split(";")[0].strip().lower()
        media_id = await self.graph.upload(attachment, content_type or "application/octet-stream")
        media: dict[str, Any] = {"id": media_id}
        if kind == "document":
            media["filename"] = attachment.filename
        return await self.graph.send({"to": to, "type": kind, kind: media})
