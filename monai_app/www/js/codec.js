// Label file codecs: what MONAI Label returns (NIfTI-1, gzipped or not, or PNG) in, 8-bit grey PNG out.
// The mask is a Uint8Array of width*height values in {0, 1}, row-major in the displayed frame:
// index = row * width + col, the frame of the image rendered by /fracseg/api/image.png.

const NIFTI_HEADER_BYTES = 348;
const GZIP_MAGIC = [0x1f, 0x8b];
const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function startsWith(bytes, magic) {
  return magic.every((b, i) => bytes[i] === b);
}

async function streamThrough(bytes, transform) {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export function gunzip(bytes) {
  return streamThrough(bytes, new DecompressionStream("gzip"));
}

// NIfTI-1 datatype code -> [TypedArray getter on a DataView, bytes per voxel]
const NIFTI_TYPES = {
  2: ["getUint8", 1],
  4: ["getInt16", 2],
  8: ["getInt32", 4],
  16: ["getFloat32", 4],
  64: ["getFloat64", 8],
  256: ["getInt8", 1],
  512: ["getUint16", 2],
  768: ["getUint32", 4],
};

/**
 * Decode an uncompressed NIfTI-1 2D label into a {0,1} mask of the displayed image (width x height).
 *
 * Voxel (i, j) of a 2D X-ray label is (column, row): MONAI and ITK store a W x H image with the column
 * index fastest, so the voxel order is already row-major. A label stored the other way round (H x W,
 * as a numpy (rows, cols) array written directly) is transposed; for a square image the (column, row)
 * convention is assumed.
 */
export function decodeNifti(bytes, width, height) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let little = true;
  if (view.getInt32(0, true) !== NIFTI_HEADER_BYTES) {
    if (view.getInt32(0, false) !== NIFTI_HEADER_BYTES) throw new Error("label is not a NIfTI-1 file");
    little = false;
  }
  const ndim = view.getInt16(40, little);
  const dims = [1, 2, 3, 4, 5, 6, 7].map((k) => (k <= ndim ? view.getInt16(40 + 2 * k, little) : 1));
  const [nx, ny] = dims;
  if (dims.slice(2).some((d) => d > 1)) throw new Error(`label has ${ndim} dimensions ${dims.slice(0, ndim)}, expected 2D`);
  const datatype = view.getInt16(70, little);
  const type = NIFTI_TYPES[datatype];
  if (!type) throw new Error(`unsupported NIfTI datatype ${datatype}`);
  const [getter, size] = type;
  const offset = Math.max(Math.round(view.getFloat32(108, little)), NIFTI_HEADER_BYTES);
  if (offset + nx * ny * size > bytes.byteLength) throw new Error("NIfTI label is truncated");
  let transposed;
  if (nx === width && ny === height) transposed = false;
  else if (nx === height && ny === width) transposed = true;
  else throw new Error(`label is ${nx}x${ny}, the image is ${width}x${height}`);
  const mask = new Uint8Array(width * height);
  if (size === 1 && getter === "getUint8" && !transposed) {
    // the usual case (uint8 labels, column index fastest): no per-voxel DataView call
    const voxels = bytes.subarray(offset, offset + nx * ny);
    for (let p = 0; p < voxels.length; p++) mask[p] = voxels[p] > 0 ? 1 : 0;
    return mask;
  }
  for (let j = 0; j < ny; j++) {
    for (let i = 0; i < nx; i++) {
      const value = view[getter](offset + (j * nx + i) * size, little);
      if (value > 0) mask[transposed ? i * width + j : j * width + i] = 1;
    }
  }
  return mask;
}

async function decodePng(bytes, width, height) {
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
  if (bitmap.width !== width || bitmap.height !== height) {
    throw new Error(`label is ${bitmap.width}x${bitmap.height}, the image is ${width}x${height}`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const mask = new Uint8Array(width * height);
  for (let p = 0; p < mask.length; p++) mask[p] = rgba[4 * p] > 0 ? 1 : 0;
  return mask;
}

/** Decode a label file (NIfTI .nii/.nii.gz or PNG, told apart by content) into a {0,1} mask. */
export async function decodeLabel(buffer, width, height) {
  let bytes = new Uint8Array(buffer);
  if (startsWith(bytes, PNG_MAGIC)) return decodePng(bytes, width, height);
  if (startsWith(bytes, GZIP_MAGIC)) bytes = await gunzip(bytes);
  return decodeNifti(bytes, width, height);
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** An 8-bit greyscale PNG of the mask: 0 background, 255 fracture (the label format the app saves). */
export async function encodeMaskPng(mask, width, height) {
  const raw = new Uint8Array((width + 1) * height); // each row: filter byte 0, then the pixels
  for (let r = 0; r < height; r++) {
    const row = r * (width + 1);
    for (let c = 0; c < width; c++) raw[row + 1 + c] = mask[r * width + c] ? 255 : 0;
  }
  const header = new Uint8Array(13);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, width);
  hv.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8); // bit depth 8, colour type 0 (grey), deflate, filter 0, no interlace
  const idat = await streamThrough(raw, new CompressionStream("deflate")); // zlib stream, as PNG wants
  return new Blob([new Uint8Array(PNG_MAGIC), chunk("IHDR", header), chunk("IDAT", idat), chunk("IEND", new Uint8Array(0))], {
    type: "image/png",
  });
}
