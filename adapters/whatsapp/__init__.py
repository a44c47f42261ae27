"""WhatsApp Business on Meta's Cloud API: signed webhook in, Graph API out (aiohttp, no SDK)."""
