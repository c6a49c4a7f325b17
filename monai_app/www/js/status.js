// Status lines for inference answers: what the model said, not only how many pixels it drew.

/**
 * The status line of an automatic answer. `params` is the answer's JSON (fracture_score,
 * fracture_present); the image head's yes needs no region (head_decides), so a "yes" with an empty
 * mask is said in words ("suspected, not localised") instead of reading as "0 fracture pixels".
 */
export function answerStatus(model, imageId, pixels, params = {}) {
  const score = Number.isFinite(params.fracture_score)
    ? ` (fracture score ${params.fracture_score.toFixed(2)})`
    : "";
  if (params.fracture_present === true && pixels === 0) {
    return `${model}: fracture suspected${score} but not localised on ${imageId}: no region above the threshold; read the whole image.`;
  }
  if (params.fracture_present === false) return `${model}: no fracture found${score} on ${imageId}.`;
  return `${model}: ${pixels} fracture pixels${score} on ${imageId}.`;
}
