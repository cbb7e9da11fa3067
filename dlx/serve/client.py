"""A small Python client for `dlx serve` that signs its requests.

    from dlx.serve.client import Client
    c = Client("http://127.0.0.1:8000", key_id, secret)
    c.predict_images([Path("seven.png").read_bytes()])   # -> [{"class": "7", "probabilities": {...}}]
    c.predict_arrays(x_batch)                            # raw values, shaped like one example each
    c.add_sample(png_bytes, label="7")
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from dlx.serve.auth import signed_headers


class ServeError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class Client:
    def __init__(self, base_url: str, key_id: str | None = None, secret: str | None = None, timeout: float = 30.0):
        import httpx

        self.key_id, self.secret = key_id, secret
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: bytes = b"", content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        if self.key_id and self.secret:
            parts = urlsplit(path)
            headers |= signed_headers(self.key_id, self.secret, method, parts.path, parts.query, body)
        response = self.http.request(method, path, content=body, headers=headers)
        data = response.json()
        if response.status_code >= 400:
            raise ServeError(response.status_code, data.get("error", response.reason_phrase))
        return data

    def models(self) -> list[dict]:
        return self.request("GET", "/v1/models")["models"]

    def predict_arrays(self, inputs) -> list[dict]:
        body = json.dumps({"inputs": [_flat(x) for x in inputs]}).encode()
        return self.request("POST", "/v1/predict", body, "application/json")["predictions"]

    def predict_images(self, images: list[bytes]) -> list[dict]:
        body, kind = multipart([("file", "image", data) for data in images], {})
        return self.request("POST", "/v1/predict", body, kind)["predictions"]

    def add_sample(self, image: bytes, label: str) -> dict:
        body, kind = multipart([("file", "image", image)], {"label": label})
        return self.request("POST", "/v1/samples", body, kind)


def _flat(x) -> list:
    import numpy as np

    return np.asarray(x, dtype=float).ravel().tolist()


def multipart(files: list[tuple[str, str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body (built here so that the signed bytes are the sent bytes)."""
    boundary = "dlx" + secrets.token_hex(12)
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, filename, data in files:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
