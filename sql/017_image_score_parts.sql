-- Issue 21: one calibrated avatar score from several parts (the avatar_stack detector: CLIP probe,
-- dlib-face probe, eye test). Each part's contribution to the score's logit is kept with the score, so
-- an account's explanation can say which part made the label. NULL for single-part detectors.
alter table image_scores add column parts jsonb;

-- The parts of the account's current avatar's score (copied from image_scores by account_signals).
alter table account_signals add column avatar_parts jsonb;
