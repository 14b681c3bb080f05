"""Names in the gFEX ntuples that convert reads (trees, branches) and in the HDF5 files it writes (datasets)."""

TREE = "mytree"  # the event tree of the gFEX ntuples
MAPS_TREE = "maps"  # the tree with one entry of tower coordinates
ET_BRANCH = "gTowerEt"
RHO_BRANCH = "Kt4EMTopoEventShape_Density"
ETA_BRANCH = "gTowerEta"
PHI_BRANCH = "gTowerPhi"
ET_DATASET = "gTowerEt"
RHO_DATASET = "offlineRho"
INDEX_DATASET = "fileIndex"
