-- Issue 4: face signals from the face detector, and the training manifest of each trained detector.

-- One row per (image, face detector): face count (the pre-filter of Ricker et al.) and the GAN
-- eye-alignment test of Yang, Singh and Menczer. eye_alignment_distance is NULL when no face with
-- two eyes was found; gan_eye_aligned is then NULL too.
create table face_signals (
    sha256                  text references images(sha256),
    detector_id             text references detectors(detector_id),
    face_count              integer not null,
    eye_alignment_distance  double precision,
    gan_eye_aligned         boolean,
    details                 jsonb not null default '{}',
    primary key (sha256, detector_id)
);
create index face_signals_detector on face_signals (detector_id);

-- What a trained detector saw: every training image by hash, with its label, split and source folder.
create table detector_training_images (
    detector_id     text not null references detectors(detector_id) on delete cascade,
    sha256          text not null,             -- of the original file bytes (no FK: not an audited image)
    label           smallint not null check (label in (0, 1)),
    split           text not null check (split in ('train', 'val', 'test')),
    source          text not null default '',
    primary key (detector_id, sha256, label)
);
