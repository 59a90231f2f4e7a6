module github.com/frank-postage/frank

go 1.26.0
