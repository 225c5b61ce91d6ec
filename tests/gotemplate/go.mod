module tunegraph/gotemplate

go 1.19
