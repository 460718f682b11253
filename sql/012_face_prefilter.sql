-- Issue 11: the usable-face pre-filter, and detectors that give some images no score.

-- A backbone may have nothing to embed (dlib-face: no face in the image): the image then gets a row
-- with no probability, label false, and the reason ("no dlib-face score: no face found").
alter table image_scores alter column probability drop not null;

-- Ricker et al.'s pre-filter: a face whose eye centres are at least 0.1 of the image width apart.
-- NULL when no face with two eyes was found (as eye_alignment_distance).
alter table face_signals add column usable_face boolean;

-- The pre-filter's result for the account's current avatar (from face_signals).
alter table account_signals add column face_usable boolean;
