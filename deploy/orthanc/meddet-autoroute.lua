-- MedDet auto-routing for Orthanc (Lua 5.3, Orthanc >= 1.5).
--
-- When a series has been stable for "StableAge" seconds (orthanc.json), forward it to the MedDet
-- node if it is an MR series of the cervical spine. The node makes its own, stricter choice
-- (sagittal, T2) and records the series it skips, so this rule only needs to be broad and cheap.
-- Results come back as SR, SEG and presentation-state series of the same study; their modality
-- is not MR, so they are never routed again.
--
-- Use: list this file in "LuaScripts" of orthanc.json and declare the node in
-- "DicomModalities" under the name given by MEDDET_MODALITY below.

local MEDDET_MODALITY = 'MEDDET'        -- key of the node in "DicomModalities"

-- BodyPartExamined values (DICOM defined terms and common vendor spellings), upper case.
local BODY_PARTS = { ['CSPINE'] = true, ['C-SPINE'] = true, ['CERVICAL SPINE'] = true, ['HWS'] = true }

-- Lua patterns searched in the lower-cased series / protocol / study descriptions.
local DESCRIPTION_PATTERNS = { 'cervical', 'c%-?spine', '%f[%a]hws%f[%A]', 'halswirbel' }

local function Matches(text)
  local lowered = string.lower(text or '')
  for _, pattern in ipairs(DESCRIPTION_PATTERNS) do
    if string.find(lowered, pattern) then
      return true
    end
  end
  return false
end

local function StudyDescription(seriesId)
  local study = ParseJson(RestApiGet('/series/' .. seriesId .. '/study'))
  return study['MainDicomTags']['StudyDescription']
end

-- True when the series is an MR series of the cervical spine (pure: no side effects).
function IsCervicalSpineMR(seriesId, tags)
  if tags['Modality'] ~= 'MR' then
    return false
  end
  if BODY_PARTS[string.upper(tags['BodyPartExamined'] or '')] then
    return true
  end
  return Matches(tags['SeriesDescription']) or Matches(tags['ProtocolName'])
    or Matches(StudyDescription(seriesId))
end

function OnStableSeries(seriesId, tags, metadata)
  if IsCervicalSpineMR(seriesId, tags) then
    print('meddet-autoroute: sending series ' .. (tags['SeriesInstanceUID'] or seriesId)
      .. ' to ' .. MEDDET_MODALITY)
    -- An asynchronous job of the REST API (visible in /jobs, retried from the UI), rather than the
    -- legacy SendToModality(), which fails to read attachments in Orthanc 1.10.
    RestApiPost('/modalities/' .. MEDDET_MODALITY .. '/store',
      DumpJson({ Resources = { seriesId }, Synchronous = false }))
  end
end
