// MONAI Label REST client: the same calls 3D Slicer's MONAI Label module makes, from the same origin.

export class ApiError extends Error {}

async function check(response, what) {
  if (response.ok) return response;
  let detail = response.statusText;
  try {
    const body = await response.clone().json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch {
    const text = await response.text();
    if (text) detail = text.slice(0, 300);
  }
  throw new ApiError(`${what} failed (HTTP ${response.status}): ${detail}`);
}

const enc = encodeURIComponent;

/** GET /info/: models, labels, active-learning strategies. */
export async function info() {
  return (await check(await fetch("/info/"), "server info")).json();
}

/** GET /datastore/?output=all: every image with its labels. Returns [{id, labels: [tags]}], sorted. */
export async function listImages() {
  const body = await (await check(await fetch("/datastore/?output=all"), "image list")).json();
  const objects = body.objects ?? {};
  return Object.keys(objects)
    .sort()
    .map((id) => ({ id, labels: Object.keys(objects[id].labels ?? {}) }));
}

/** POST /activelearning/{strategy}: the id of the next image to annotate (null when none is left). */
export async function nextSample(strategy) {
  const response = await fetch(`/activelearning/${enc(strategy)}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
  const body = await (await check(response, `next sample (${strategy})`)).json();
  return body.id ?? null;
}

/** The datastore image as an 8-bit PNG in the frame of every returned mask (fracseg's readers). */
export function imageUrl(imageId) {
  return `/fracseg/api/image.png?image=${enc(imageId)}`;
}

/**
 * POST /infer/{model}?image=ID&output=all with form field params (JSON), as Slicer sends it.
 * Points are [x, y, 0]: x = column, y = row of the displayed image. Returns the label file's bytes and the
 * answer's params (fracture_score, fracture_present, regions, ...) from MONAI Label's multipart reply.
 */
export async function infer(model, imageId, foreground = [], background = []) {
  const form = new FormData();
  form.append("params", JSON.stringify({ foreground, background }));
  const response = await fetch(`/infer/${enc(model)}?image=${enc(imageId)}&output=all`, {
    method: "POST",
    body: form,
  });
  const reply = await (await check(response, `inference (${model})`)).formData();
  const image = reply.get("image");
  if (!(image instanceof Blob)) throw new Error(`inference (${model}): the server sent no label image`);
  const params = reply.get("params");
  return { buffer: await image.arrayBuffer(), params: typeof params === "string" ? JSON.parse(params) : {} };
}

/** PUT /datastore/label?image=ID&tag=TAG with the label file (multipart field "label"). */
export async function saveLabel(imageId, pngBlob, tag = "final") {
  const form = new FormData();
  form.append("label", pngBlob, `${imageId}.png`);
  form.append("params", JSON.stringify({ client: "fracseg-correction-page" }));
  const response = await fetch(`/datastore/label?image=${enc(imageId)}&tag=${enc(tag)}`, {
    method: "PUT",
    body: form,
  });
  return (await check(response, "saving the label")).json();
}
